"""Reference posteriors for the many-chain warm-up: every chain mixed (rank-normalised R-hat),
moments within 4 MCSE of exact values, min-ESS per second against Pyro's NUTS.

Posteriors (exact moments by quadrature or in closed form, not by a long run):

- ``eight_schools_centred`` / ``eight_schools_noncentred``: Rubin's eight schools, ``mu ~
  N(0, 5²)``, ``tau ~ HalfCauchy(5)``, ``theta_j ~ N(mu, tau²)``, ``y_j ~ N(theta_j, sigma_j²)``,
  sampled in ``(mu, log tau, theta)`` (centred) or ``(mu, log tau, eta)`` with ``theta = mu +
  tau eta`` (non-centred). Exact moments of ``mu, log tau, theta`` by 2-D quadrature over
  ``(mu, log tau)`` with ``theta`` integrated out in closed form.
- ``banana``: ``x1 ~ N(0, 10²)``, ``x2 | x1 ~ N(0.1 (x1² − 100), 1)``.
- ``rotated_gaussian``: 100-d, covariance ``Q diag(λ) Qᵀ`` with ``λ`` log-spaced over five
  decades (condition number 1e5) and a fixed random rotation ``Q``.
- ``funnel``: Neal's funnel in 2-D, ``v ~ N(0, 3²)`` truncated to ``|v| < 4`` (so every
  moment of ``x`` exists and its MCSE is defined), ``x | v ~ N(0, e^v)``; sampled in
  ``(u, x)`` with ``v = 4 tanh(u)``. Exact moments by 1-D quadrature.

Each ebm run: 1,024 chains, the sampler's defaults, ``--burn-in`` warm-up and ``--steps``
draws. Pyro: one NUTS chain with its defaults (``--nuts-warmup`` + ``--nuts-draws``), warm-up
counted in its time as in ours. Printed per run: max R-hat, min bulk/tail ESS, the largest
``|estimate − exact| / MCSE`` of the means and of the sds, divergences, restarted chains,
seconds, min-ESS/s and its ratio to NUTS's, measured in the same run, and for ebm's HMC the
E-BFMI over chains (min / median, and how many chains are below 0.3).

BlackJAX (optional): ``--blackjax-python PATH``, an interpreter of a separate environment with
``blackjax`` and ``jax`` (``python3 -m venv /tmp/bjx && /tmp/bjx/bin/pip install blackjax jax``),
runs ``benchmarks/posteriors_blackjax.py`` in a subprocess for each posterior (ChEES-HMC, and
MEADS with ``--blackjax-methods chees meads``) with the same chains, warm-up and draws; its
draws come back as ``.npy`` and are checked here with the same diagnostics.

Run: ``PYTHONPATH=. python benchmarks/posteriors.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS

import ebm
from benchmarks.common import hardware
from ebm.diagnostics import compute, e_bfmi

Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], dtype=torch.float64)
SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0], dtype=torch.float64)


class Posterior(ebm.EnergyModel):
    """One ``Real(dim)`` block ``x``; ``quantities`` maps draws to the checked quantities and
    ``exact`` gives their exact means and sds."""

    names: list[str]

    def __init__(self, dim: int):
        super().__init__(x=ebm.Real(dim))

    def quantities(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def exact(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


def _schools_moments() -> tuple[torch.Tensor, torch.Tensor]:
    """Exact means and sds of ``(mu, log tau, theta_1..8)`` by quadrature on a (mu, log tau) grid."""
    mu = torch.linspace(-40, 50, 1801, dtype=torch.float64)
    log_tau = torch.linspace(-25, 8, 1651, dtype=torch.float64)
    m, lt = torch.meshgrid(mu, log_tau, indexing="ij")
    tau2 = (2 * lt).exp()
    total = SIGMA.square() + tau2.unsqueeze(-1)
    log_p = (
        -0.5 * ((Y - m.unsqueeze(-1)).square() / total + total.log()).sum(-1) - m.square() / 50 - torch.log1p(tau2 / 25) + lt
    )
    w = (log_p - log_p.max()).exp()
    w = w / w.sum()
    precision = 1 / SIGMA.square() + 1 / tau2.unsqueeze(-1)
    theta_mean = (Y / SIGMA.square() + m.unsqueeze(-1) / tau2.unsqueeze(-1)) / precision
    first = [(w * m).sum(), (w * lt).sum(), *(w.unsqueeze(-1) * theta_mean).sum((0, 1))]
    second = [
        (w * m.square()).sum(),
        (w * lt.square()).sum(),
        *(w.unsqueeze(-1) * (theta_mean.square() + 1 / precision)).sum((0, 1)),
    ]
    first, second = torch.stack(first), torch.stack(second)
    return first, (second - first.square()).sqrt()


class EightSchools(Posterior):
    def __init__(self, centred: bool):
        super().__init__(10)
        self.centred = centred
        self.names = ["mu", "log_tau", *(f"theta[{j}]" for j in range(8))]

    def _theta(self, x):
        mu, log_tau, rest = x[..., 0], x[..., 1], x[..., 2:]
        return rest if self.centred else mu.unsqueeze(-1) + log_tau.exp().unsqueeze(-1) * rest

    def energy(self, state):
        x = state["x"]
        y, sigma = Y.to(x.dtype), SIGMA.to(x.dtype)
        mu, log_tau, rest = x[:, 0], x[:, 1], x[:, 2:]
        tau = log_tau.exp()
        theta = self._theta(x)
        likelihood = 0.5 * ((y - theta) / sigma).square().sum(-1)
        if self.centred:
            prior_theta = 0.5 * ((theta - mu.unsqueeze(-1)) / tau.unsqueeze(-1)).square().sum(-1) + 8 * log_tau
        else:
            prior_theta = 0.5 * rest.square().sum(-1)
        return likelihood + prior_theta + mu.square() / 50 + torch.log1p(tau.square() / 25) - log_tau

    def quantities(self, x):
        return torch.cat([x[..., :2], self._theta(x)], -1)

    def exact(self):
        return _schools_moments()


class Banana(Posterior):
    B = 0.1

    def __init__(self):
        super().__init__(2)
        self.names = ["x1", "x2"]

    def energy(self, state):
        x = state["x"]
        return 0.5 * (x[:, 0] / 10).square() + 0.5 * (x[:, 1] - self.B * (x[:, 0].square() - 100)).square()

    def exact(self):
        sd2 = math.sqrt(1 + self.B**2 * 2 * 100**2)
        return torch.zeros(2, dtype=torch.float64), torch.tensor([10.0, sd2], dtype=torch.float64)


class RotatedGaussian(Posterior):
    def __init__(self, dim: int = 100, decades: float = 5.0):
        super().__init__(dim)
        generator = torch.Generator().manual_seed(0)
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
        eigen = torch.logspace(-decades / 2, decades / 2, dim, dtype=torch.float64)
        self.register_buffer("covariance", (q * eigen) @ q.T)
        self.register_buffer("precision", (q / eigen) @ q.T)
        self.names = [f"x[{i}]" for i in range(dim)]

    def energy(self, state):
        x = state["x"]
        return 0.5 * ((x @ self.precision.to(x.dtype)) * x).sum(-1)

    def exact(self):
        return torch.zeros(self.covariance.shape[0], dtype=torch.float64), self.covariance.diagonal().sqrt()


class Funnel(Posterior):
    SCALE, LIMIT = 3.0, 4.0

    def __init__(self):
        super().__init__(2)
        self.names = ["v", "x"]

    def energy(self, state):
        u, x = state["x"][:, 0], state["x"][:, 1]
        v = self.LIMIT * torch.tanh(u)
        # density of u: p(v(u)) dv/du, dv/du = LIMIT (1 - tanh²u)
        jacobian = torch.log1p(-torch.tanh(u).square()).clamp(min=-1e4)
        return 0.5 * (v / self.SCALE).square() + 0.5 * x.square() * (-v).exp() + 0.5 * v - jacobian

    def quantities(self, x):
        return torch.stack([self.LIMIT * torch.tanh(x[..., 0]), x[..., 1]], -1)

    def exact(self):
        v = torch.linspace(-self.LIMIT, self.LIMIT, 200001, dtype=torch.float64)
        w = (-0.5 * (v / self.SCALE) ** 2).exp()
        w = w / w.sum()
        var_v, var_x = (w * v.square()).sum(), (w * v.exp()).sum()
        return torch.zeros(2, dtype=torch.float64), torch.stack([var_v.sqrt(), var_x.sqrt()])


POSTERIORS = {
    "eight_schools_centred": lambda: EightSchools(centred=True),
    "eight_schools_noncentred": lambda: EightSchools(centred=False),
    "banana": Banana,
    "rotated_gaussian": RotatedGaussian,
    "funnel": Funnel,
}


def check(posterior: Posterior, draws: torch.Tensor) -> dict[str, float]:
    """Max R-hat, min ESS and the largest moment z-scores of ``draws`` ``(n_draws, n_chains, D)``."""
    q = posterior.quantities(draws.double())
    stats = compute(q, ("rhat", "ess_bulk", "ess_tail", "mcse_mean", "mcse_sd"))
    mean, sd = posterior.exact()
    n = q.shape[0] * q.shape[1]
    z_mean = (q.mean((0, 1)) - mean).abs() / stats["mcse_mean"]
    z_sd = (q.reshape(n, -1).std(0) - sd).abs() / stats["mcse_sd"]
    return {
        "rhat": stats["rhat"].max().item(),
        "ess": torch.minimum(stats["ess_bulk"], stats["ess_tail"]).min().item(),
        "z_mean": z_mean.max().item(),
        "z_sd": z_sd.max().item(),
    }


def run_ebm(posterior: Posterior, sampler: ebm.samplers.base.Sampler, args) -> dict[str, float]:
    start = time.perf_counter()
    chains = ebm.sample(
        posterior, sampler, n_chains=args.chains, n_steps=args.steps, burn_in=args.burn_in, seed=args.seed, progress=False
    )
    seconds = time.perf_counter() - start
    out = check(posterior, chains["x"])
    s = chains.sampler_state
    out.update(
        seconds=seconds,
        divergent=chains.n_divergent,
        rescued=int(s.rescued.gt(0).sum()) if getattr(s, "rescued", None) is not None else 0,
        leapfrog=chains.stats["n_leapfrog"].double().mean().item() if "n_leapfrog" in chains.stats else 1.0,
    )
    if "hamiltonian" in chains.stats:
        bfmi = e_bfmi(chains.stats["hamiltonian"])
        out.update(bfmi_min=bfmi.min().item(), bfmi_median=bfmi.median().item(), bfmi_low=int((~(bfmi >= 0.3)).sum()))
    return out


def run_nuts(posterior: Posterior, args) -> dict[str, float]:
    pyro.set_rng_seed(args.seed)

    def potential(params):
        return posterior.energy({"x": params["x"].unsqueeze(0)})[0]

    dim = posterior.variables["x"].shape[0]
    kernel = NUTS(potential_fn=potential)
    mcmc = MCMC(
        kernel,
        num_samples=args.nuts_draws,
        warmup_steps=args.nuts_warmup,
        initial_params={"x": torch.zeros(dim)},
        disable_progbar=True,
    )
    start = time.perf_counter()
    mcmc.run()
    seconds = time.perf_counter() - start
    draws = mcmc.get_samples()["x"].unsqueeze(1)
    out = check(posterior, draws)
    out.update(seconds=seconds, divergent=int(mcmc.diagnostics()["divergences"]["chain 0"].__len__()))
    return out


def run_blackjax(name: str, posterior: Posterior, method: str, args) -> dict[str, float]:
    """BlackJAX's ChEES or MEADS on ``posterior`` in ``args.blackjax_python``'s environment
    (``benchmarks/posteriors_blackjax.py``), checked here like ``run_ebm``'s draws."""
    with tempfile.TemporaryDirectory(prefix="posteriors-blackjax-") as folder:
        command = [args.blackjax_python, str(Path(__file__).with_name("posteriors_blackjax.py")), "--posterior", name]
        command += ["--method", method, "--chains", str(args.chains), "--burn-in", str(args.burn_in)]
        command += ["--steps", str(args.steps), "--seed", str(args.seed), "--out", folder]
        if isinstance(posterior, RotatedGaussian):
            np.save(Path(folder) / "precision.npy", posterior.precision.numpy())
            command += ["--precision", str(Path(folder) / "precision.npy")]
        subprocess.run(command, check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
        draws = torch.from_numpy(np.load(Path(folder) / "draws.npy"))
        info = json.loads((Path(folder) / "info.json").read_text())
    out = check(posterior, draws)
    out.update(seconds=info["seconds"], divergent=info["divergent"], rescued=0, leapfrog=info["leapfrog"])
    return out


SAMPLERS = {
    "HMC()": lambda: ebm.HMC(),
    "HMC(dense_mass=False)": lambda: ebm.HMC(dense_mass=False),
    "HMC(step_range=1000, refreshes=8)": lambda: ebm.HMC(step_range=1000.0, refreshes=8),
    "HMC(tempering=2)": lambda: ebm.HMC(tempering=2.0),
    "HMC(tempering=4)": lambda: ebm.HMC(tempering=4.0),
    "HMC(tempering=10)": lambda: ebm.HMC(tempering=10.0),
    "HMC(0.1, 10)": lambda: ebm.HMC(0.1, 10),
    "Langevin()": lambda: ebm.Langevin(),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posteriors", nargs="*", default=list(POSTERIORS), choices=list(POSTERIORS))
    parser.add_argument("--samplers", nargs="*", default=["HMC()"], choices=list(SAMPLERS))
    parser.add_argument("--chains", type=int, default=1024)
    parser.add_argument("--burn-in", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--nuts-warmup", type=int, default=300)
    parser.add_argument("--nuts-draws", type=int, default=300)
    parser.add_argument("--no-nuts", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blackjax-python", help="an interpreter with blackjax and jax installed (optional)")
    parser.add_argument("--blackjax-methods", nargs="*", default=["chees"], choices=["chees", "meads"])
    parser.add_argument("--quick", action="store_true", help="64 chains, 300 + 300 steps, NUTS 100 + 100")
    args = parser.parse_args()
    if args.quick:
        args.chains, args.burn_in, args.steps, args.nuts_warmup, args.nuts_draws = 64, 300, 300, 100, 100
    print(f"# {hardware()}; load average {os.getloadavg()[0]:.2f}")
    print(f"# ebm: {args.chains} chains, burn_in={args.burn_in}, n_steps={args.steps}, seed={args.seed}")
    header = f"{'posterior':<26}{'sampler':<34}{'R-hat':>7}{'minESS':>8}{'z_mean':>8}{'z_sd':>7}"
    print(header + f"{'div':>7}{'rescued':>8}{'L':>6}{'sec':>8}{'ESS/s':>9}{'vs NUTS':>8}  E-BFMI min/median (<0.3)")
    for name in args.posteriors:
        posterior = POSTERIORS[name]()
        nuts_rate = math.nan
        if not args.no_nuts:
            r = run_nuts(posterior, args)
            nuts_rate = r["ess"] / r["seconds"]
            print(
                f"{name:<26}{'Pyro NUTS, 1 chain':<34}{r['rhat']:>7.3f}{r['ess']:>8.0f}{r['z_mean']:>8.1f}{r['z_sd']:>7.1f}"
                f"{r['divergent']:>7}{'':>8}{'':>6}{r['seconds']:>8.1f}{nuts_rate:>9.1f}{1:>8.2f}"
            )
        runs = [(label, None) for label in args.samplers]
        if args.blackjax_python:
            runs += [(f"BlackJAX {m}", m) for m in args.blackjax_methods]
        for label, method in runs:
            if method is None:
                r = run_ebm(posterior, SAMPLERS[label](), args)
            else:
                r = run_blackjax(name, posterior, method, args)
            rate = r["ess"] / r["seconds"]
            print(
                f"{name:<26}{label:<34}{r['rhat']:>7.3f}{r['ess']:>8.0f}{r['z_mean']:>8.1f}{r['z_sd']:>7.1f}"
                f"{r['divergent']:>7}{r['rescued']:>8}{r['leapfrog']:>6.1f}{r['seconds']:>8.1f}{rate:>9.1f}"
                f"{rate / nuts_rate:>8.2f}"
                + (f"  {r['bfmi_min']:.3f}/{r['bfmi_median']:.3f} ({r['bfmi_low']})" if "bfmi_min" in r else ""),
                flush=True,
            )
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
