"""RBM block-Gibbs sweeps per second through ``ebm.sample``, against the bare matrix products.

A sweep draws h | v and v | h: two matrix products (``v @ W`` and ``h @ W.T``) plus the
elementwise sigmoid, uniform draw and compare. The ratio ``ebm / bare products`` says how
close the sampler runs to the speed of its two products, measured in the same run.

    python benchmarks/gibbs.py [--device cuda] [--chains 1000]
"""

from __future__ import annotations

import argparse

import torch
from common import best_rates, hardware

import ebm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chains", type=int, default=1000)
    parser.add_argument("--sizes", default="784x500,64x100", help="comma-separated n_visible x n_hidden")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"hardware: {hardware(args.device)}; float32, {args.chains} chains")
    print(f"{'size':>9} {'bare sweeps/s':>14} {'ebm sweeps/s':>13} {'ratio':>6} {'thin=1 sweeps/s':>16} {'ratio':>6}")
    for size in args.sizes.split(","):
        n_visible, n_hidden = map(int, size.split("x"))
        rbm = ebm.RBM(n_visible, n_hidden, seed=0).to(args.device)
        W = rbm.W.detach()
        v = (torch.rand(args.chains, n_visible, device=args.device) < 0.5).float()
        h = (torch.rand(args.chains, n_hidden, device=args.device) < 0.5).float()
        # aim for ~1 s per timing at the bare rate of ~150 GFLOP/s on CPU
        flops = 4 * args.chains * n_visible * n_hidden
        n = max(20, int(1.5e11 / flops)) if args.device == "cpu" else 2000

        def bare(n=n, W=W, v=v, h=h):
            for _ in range(n):
                v @ W
                h @ W.T

        def sampled(n=n, rbm=rbm, thin=n):
            ebm.sample(rbm, ebm.Gibbs(), n_chains=args.chains, n_steps=n, thin=thin, seed=0)

        def recorded(n=n, rbm=rbm):
            ebm.sample(rbm, ebm.Gibbs(), n_chains=args.chains, n_steps=n, thin=1, seed=0)

        rates = best_rates({"bare": bare, "sampled": sampled, "recorded": recorded}, n, repeats=3, device=args.device)
        bare_rate, rate, rec_rate = rates["bare"], rates["sampled"], rates["recorded"]
        print(
            f"{size:>9} {bare_rate:>14.1f} {rate:>13.1f} {rate / bare_rate:>6.2f} "
            f"{rec_rate:>16.1f} {rec_rate / bare_rate:>6.2f}"
        )


if __name__ == "__main__":
    main()
