#!/usr/bin/env bash
# Regenerate every figure of the docs into docs/figures/ (run from the repository root).
# Each figure comes from an example script or the plot gallery; none is drawn by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/figures
mkdir -p "$out"
python docs/gallery.py --out "$out"
for example in ising rbm_digits rbm_mnist continuous_2d latent_gaussian; do
    if [[ -f "examples/$example.py" ]]; then
        python "examples/$example.py" --out "$out"
    fi
done
