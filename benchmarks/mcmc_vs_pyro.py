"""Batched MALA/HMC in ebm against Pyro's NUTS: min-ESS per second, warm-up counted for both.

Targets (100-d, zero mean): a standard Gaussian and a diagonal Gaussian with variances
log-spaced from 1e-2 to 1e2. Pyro: one NUTS chain with its defaults (step-size and diagonal
mass adaptation), 500 warm-up + 1000 draws, driven through ``potential_fn`` (no model
tracing). ebm: ``ebm.sample`` over 1000 chains with the default adaptation during burn-in.
min-ESS is the smallest effective sample size over the 100 coordinates (Geyer's initial
monotone sequence, pyro.ops.stats); time is wall-clock from start to the last draw.

Run: ``python benchmarks/mcmc_vs_pyro.py [--threads N] [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import pyro
import torch
from pyro.infer import MCMC, NUTS
from pyro.ops.stats import effective_sample_size

import ebm


class DiagonalGaussian(ebm.EnergyModel):
    """``E(x) = Σ x² / 2σ²`` over ``Real(dim)``."""

    def __init__(self, variances: list[float]):
        super().__init__(x=ebm.Real(len(variances)))
        self.register_buffer("precision", 1 / torch.tensor(variances))

    def energy(self, state):
        return 0.5 * (state["x"].square() * self.precision).sum(-1)


def run_pyro(precision: torch.Tensor, warmup: int, draws: int, seed: int) -> tuple[float, float]:
    """Min-ESS and seconds of one Pyro NUTS chain with its default adaptation."""
    pyro.set_rng_seed(seed)

    def potential(params):
        return 0.5 * (params["x"].square() * precision).sum()

    kernel = NUTS(potential_fn=potential)
    mcmc = MCMC(kernel, num_samples=draws, warmup_steps=warmup, initial_params={"x": torch.zeros(len(precision))},
                disable_progbar=True)  # fmt: skip
    start = time.perf_counter()
    mcmc.run()
    seconds = time.perf_counter() - start
    samples = mcmc.get_samples()["x"].unsqueeze(0)
    return effective_sample_size(samples, chain_dim=0, sample_dim=1).min().item(), seconds


def run_ebm(model: ebm.EnergyModel, sampler, n_chains: int, burn_in: int, n_steps: int, seed: int):
    """Min-ESS, seconds and mean acceptance of ``ebm.sample``."""
    start = time.perf_counter()
    chains = ebm.sample(model, sampler, n_chains=n_chains, n_steps=n_steps, burn_in=burn_in, seed=seed, progress=False)
    seconds = time.perf_counter() - start
    return ebm.diagnostics.ess(chains["x"]).min().item(), seconds, chains.stats["accept_prob"].mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--chains", type=int, default=1000)
    parser.add_argument("--burn-in", type=int, default=150)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="tiny run to check the script works")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warmup, draws = (50, 100) if args.quick else (500, 1000)
    if args.quick:
        args.chains, args.burn_in, args.steps = 50, 50, 50
    cpu = platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    print(f"hardware: {cpu}, {os.cpu_count()} CPUs; torch {torch.__version__}, {threads} thread(s); pyro {pyro.__version__}")
    targets = {
        "standard": [1.0] * 100,
        "ill-conditioned": torch.logspace(-2, 2, 100).tolist(),
    }
    # n_leapfrog=4 puts the adapted trajectory near half a period of a standard Gaussian, so
    # successive draws are anti-correlated and ESS exceeds the number of draws; 6 does not.
    samplers = {
        "HMC(n_leapfrog=4)": lambda: ebm.HMC(0.1, 4),
        "HMC(n_leapfrog=6)": lambda: ebm.HMC(0.1, 6),
        "MALA": lambda: ebm.Langevin(0.1),
    }
    print(f"{'target':<16}{'method':<20}{'min ESS':>10}{'seconds':>9}{'ESS/s':>10}{'accept':>8}{'vs Pyro':>9}")
    for name, variances in targets.items():
        model = DiagonalGaussian(variances)
        ess, seconds = run_pyro(model.precision, warmup, draws, seed=0)
        pyro_rate = ess / seconds
        print(f"{name:<16}{'Pyro NUTS, 1 chain':<20}{ess:>10.0f}{seconds:>9.2f}{pyro_rate:>10.0f}{'':>8}{1:>8.0f}x")
        for label, make in samplers.items():
            ess, seconds, accept = run_ebm(model, make(), args.chains, args.burn_in, args.steps, seed=0)
            rate = ess / seconds
            print(f"{name:<16}{label:<20}{ess:>10.0f}{seconds:>9.2f}{rate:>10.0f}{accept:>8.3f}{rate / pyro_rate:>8.0f}x")


if __name__ == "__main__":
    main()
