"""Draw the plot gallery of the docs' "Diagnostics and plots" page from short runs.

    python docs/gallery.py --out docs/figures      # about a minute on 2 cores

Writes ``gallery_<function>.png`` for each function of ``ebm.plot``: an 8x8 Ising model
near its critical point (trace, autocorrelation, running mean, energy), an RBM trained
briefly on the bundled digits (samples, filters, training history) and a correlated
2-D Gaussian sampled with HMC (marginals, density).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import ebm
from ebm.datasets import digits
from ebm.samplers.hmc import HMC


class Ising(ebm.EnergyModel):
    def __init__(self, L: int, beta: float):
        super().__init__(s=ebm.Spin(L, L))
        self.beta = beta

    def energy(self, state):
        s = state["s"]
        return -self.beta * (s * s.roll(1, -1) + s * s.roll(1, -2)).sum((-2, -1))


class Correlated(ebm.EnergyModel):
    """A 2-D Gaussian with standard deviations 1.5 and 0.5 along the diagonals (correlation 0.8)."""

    def __init__(self):
        super().__init__(x=ebm.Real(2))

    def energy(self, state):
        x = state["x"]
        u, v = (x[:, 0] + x[:, 1]) / 2**0.5, (x[:, 0] - x[:, 1]) / 2**0.5
        return 0.5 * (u / 1.5) ** 2 + 0.5 * (v / 0.5) ** 2


def magnetisation(state):
    return state["s"].mean((-2, -1))


def figures(seed: int) -> dict:
    ising = ebm.sample(Ising(8, 0.4), ebm.Gibbs(), n_chains=8, n_steps=400, burn_in=0, seed=seed)
    train, _ = digits("train")
    rbm = ebm.RBM(64, 36, seed=seed)
    rbm.init_visible_bias(train)
    history = ebm.fit(rbm, {"v": train}, sampler=ebm.Gibbs(), method="pcd", epochs=15, batch_size=20, lr=0.01, seed=seed)
    rbm_chains = ebm.sample(rbm, ebm.Gibbs(), n_chains=36, n_steps=200, burn_in=100, seed=seed)
    gaussian = Correlated()
    hmc = ebm.sample(gaussian, HMC(step_size=0.1, n_leapfrog=8), n_chains=64, n_steps=300, burn_in=200, seed=seed)
    plot = ebm.plot
    return {
        "trace": plot.trace(ising, {"energy": "energy", "m": magnetisation, "s": "s"}, coords=[0], burn_in=50),
        "autocorrelation": plot.autocorrelation(ising, {"energy": "energy", "m": magnetisation}, max_lag=60),
        "running_mean": plot.running_mean(ising, {"m": magnetisation}),
        "energy": plot.energy(ising, burn_in=50),
        "marginals": plot.marginals(hmc, "x"),
        "samples": plot.samples(rbm_chains, "v"),
        "filters": plot.filters(rbm, n=36),
        "density_2d": plot.density_2d(gaussian, hmc),
        # "loss" is the eq. 16 surrogate: its value is not a measure of fit, so it is left out
        "history": plot.history(history, [k for k in ("recon", "pseudo_ll", "log_likelihood") if k in history[0]]),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/figures"), help="folder for the PNG files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    for name, fig in figures(args.seed).items():
        fig.savefig(args.out / f"gallery_{name}.png", dpi=100)
    print(f"wrote the gallery to {args.out}")


if __name__ == "__main__":
    main()
