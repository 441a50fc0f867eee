"""One-call GPU check: the public API on CUDA gives the right answers, then timings.

Correctness (each line prints PASS/FAIL with the statistic it used):
- Gibbs on a tiny RBM: chi-square of 20,000 independent chains against exact enumeration;
- MALA and HMC on a 10-d ill-conditioned Gaussian: |mean - 0| / MCSE and |E[x²] - var| / MCSE;
- AIS on a 12-hidden RBM against exact log Z, within 4 reported standard errors;
- ebm.fit on digits for a few epochs raises the exact log-likelihood over the independent-pixel baseline.

    python benchmarks/gpu_check.py --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from common import hardware

import ebm
import ebm.datasets
from ebm import diagnostics

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from stattools import chi_square_pvalue, state_index


def report(name: str, ok: bool, detail: str) -> bool:
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    return ok


def check_gibbs(device: str) -> bool:
    torch.manual_seed(0)
    rbm = ebm.RBM(4, 3, seed=0).double().to(device)
    with torch.no_grad():
        for p in rbm.parameters():
            p.normal_(0, 1.0)
    chains = ebm.sample(rbm, ebm.Gibbs(), n_chains=20_000, n_steps=1, burn_in=30, seed=1)
    bits = torch.cat([chains["v"][-1], chains["h"][-1]], 1).cpu()
    counts = torch.bincount(state_index(bits > 0), minlength=128)
    k = torch.arange(128)
    states = ((k.unsqueeze(1) >> torch.arange(7)) & 1).double().to(device)
    with torch.no_grad():
        probs = torch.softmax(-rbm.energy({"v": states[:, :4], "h": states[:, 4:]}), 0).cpu()
    p = chi_square_pvalue(counts, probs)
    return report("gibbs exact joint", p > 1e-4, f"chi-square p = {p:.3g}")


def check_gaussian(device: str, sampler, name: str) -> bool:
    class Gaussian(ebm.EnergyModel):
        def __init__(self):
            super().__init__(x=ebm.Real(10))
            self.register_buffer("var", torch.logspace(-1, 1, 10))

        def energy(self, state):
            return 0.5 * (state["x"] ** 2 / self.var).sum(-1)

    model = Gaussian().to(device)
    chains = ebm.sample(model, sampler, n_chains=500, n_steps=400, burn_in=300, seed=0)
    summary = chains.summary()
    z_mean = (summary["x"]["mean"] / summary["x"]["mcse"]).abs().max().item()
    # second moments: the mean of x² must match the variances within its own MCSE
    square = chains["x"].square()
    z_var = ((square.mean((0, 1)) - model.var) / diagnostics.mcse(square)).abs().max().item()
    ok = max(z_mean, z_var) < 4.0
    return report(f"{name} gaussian", ok, f"max |mean|/MCSE = {z_mean:.2f}, max |E[x²] - var|/MCSE = {z_var:.2f}")


def check_ais(device: str) -> bool:
    x, _ = ebm.datasets.digits()
    x = x.to(device)
    rbm = ebm.RBM(64, 12, seed=0).to(device)
    ebm.fit(rbm, {"v": x}, epochs=5, progress=False)
    exact = ebm.log_partition(rbm, method="exact")
    est = ebm.log_partition(rbm, method="ais", n_betas=2000, n_runs=200, data={"v": x})
    z = abs(float(est) - float(exact)) / max(est.stderr, 1e-12)
    return report("ais vs exact", z < 4.0, f"exact {float(exact):.3f}, ais {float(est):.3f} ± {est.stderr:.3f} ({z:.2f} se)")


def check_fit(device: str) -> bool:
    x, _ = ebm.datasets.digits()
    x = x.to(device)
    p = x.mean(0).clamp(1e-3, 1 - 1e-3)
    baseline = (x * p.log() + (1 - x) * (1 - p).log()).sum(1).mean().item()
    rbm = ebm.RBM(64, 16, seed=0).to(device)
    start = time.perf_counter()
    ebm.fit(rbm, {"v": x}, epochs=10, progress=False)
    ll = ebm.log_likelihood(rbm, {"v": x}).mean().item()
    return report(
        "fit digits", ll > baseline, f"LL {ll:.2f} vs baseline {baseline:.2f} in {time.perf_counter() - start:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    print(f"hardware: {hardware(args.device)}", flush=True)
    results = [
        check_gibbs(args.device),
        check_gaussian(args.device, ebm.Langevin(0.1), "MALA"),
        check_gaussian(args.device, ebm.HMC(0.1, 10), "HMC"),
        check_ais(args.device),
        check_fit(args.device),
    ]
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
