#!/usr/bin/env bash
# Regenerate every figure of the docs into docs/figures/ (run from the repository root).
# Each figure comes from an example script or the plot gallery; none is drawn by hand.
#   bash docs/figures.sh            # full runs (minutes)
#   bash docs/figures.sh --fast     # the examples' quick settings
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/figures
mkdir -p "$out"
python docs/gallery.py --out "$out"
for example in ising rbm_digits continuous_2d latent_gaussian; do
    python "examples/$example.py" "$@" --out "$out"
done
if [[ "${1:-}" != "--fast" ]]; then
    # sweeps/s against chains and model size (about a minute; also made by python -m benchmarks)
    python benchmarks/gibbs.py --scan --plot "$out/benchmark_sweeps.png"
fi
