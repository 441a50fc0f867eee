"""RBM block-Gibbs sweeps per second through ``ebm.sample``, against the bare matrix products.

A sweep draws h | v and v | h: two matrix products (``v @ W`` and ``h @ W.T``) plus the
sigmoid and the exact Bernoulli draw. The ratio ``ebm / bare products`` says how close the
sampler runs to the speed of its two products, measured in the same run (timed in
alternation, best of 3). ``thin=1`` also records every draw and its energy.

``--scan`` adds sweeps/s against the number of chains (10 to 10,000, 784x500) and against
the model size (1000 chains), ebm and bare, for the docs' benchmarks page.

    python benchmarks/gibbs.py [--device cuda] [--chains 1000] [--scan]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from common import best_rates, hardware

import ebm

SCAN_CHAINS = (10, 100, 1000, 10_000)
SCAN_SIZES = ("16x16", "64x100", "256x256", "784x500", "1024x1024")


def rates(n_visible: int, n_hidden: int, chains: int, device: str, recorded: bool, seconds: float = 1.0) -> dict:
    """Sweeps per second of the bare products, ``ebm.sample`` and (``recorded``) thin=1."""
    rbm = ebm.RBM(n_visible, n_hidden, seed=0).to(device)
    W = rbm.W.detach()
    v = (torch.rand(chains, n_visible, device=device) < 0.5).float()
    h = (torch.rand(chains, n_hidden, device=device) < 0.5).float()
    # size the runs from two short timings of the sampler (the slowest of the three), so that
    # each timing takes ~`seconds` whatever the machine and its load: their difference is the
    # cost of a sweep without ebm.sample's fixed cost per call (state set-up, end-of-run
    # checks), which would otherwise make small models' runs too short to amortise it
    probes = []
    for steps in (5, 25):
        start = time.perf_counter()
        ebm.sample(rbm, ebm.Gibbs(), n_chains=chains, n_steps=steps, thin=steps, seed=0)
        probes.append(time.perf_counter() - start)
    per_sweep = max((probes[1] - probes[0]) / 20, probes[1] / 25 / 10)
    n = int(min(max(seconds / per_sweep / (2 if recorded else 1), 10), 100_000))

    def bare():
        for _ in range(n):
            v @ W
            h @ W.T

    def sampled():
        ebm.sample(rbm, ebm.Gibbs(), n_chains=chains, n_steps=n, thin=n, seed=0)

    def thin1():
        ebm.sample(rbm, ebm.Gibbs(), n_chains=chains, n_steps=n, thin=1, seed=0)

    fns = {"bare": bare, "ebm": sampled}
    if recorded:
        fns["thin1"] = thin1
    return best_rates(fns, n, repeats=3, device=device)


def run(sizes=("784x500", "64x100"), chains: int = 1000, device: str = "cpu", scan: bool = False) -> dict:
    torch.manual_seed(0)
    # short runs from a random start are not mixed; the reliability warning is not news here
    warnings.filterwarnings("ignore", message="Chains not mixed")
    result = {"hardware": hardware(device), "chains": chains, "rows": []}
    for size in sizes:
        n_visible, n_hidden = map(int, size.split("x"))
        r = rates(n_visible, n_hidden, chains, device, recorded=True)
        result["rows"].append(
            {
                "size": size,
                **{f"{k}_sweeps_per_s": v for k, v in r.items()},
                "ratio": r["ebm"] / r["bare"],
                "thin1_ratio": r["thin1"] / r["bare"],
            }
        )
    if scan:
        result["scan_chains"] = [
            {"chains": c, **rates(784, 500, c, device, recorded=False, seconds=0.4)} for c in SCAN_CHAINS
        ]
        result["scan_sizes"] = [
            {"size": s, **rates(*map(int, s.split("x")), chains, device, recorded=False, seconds=0.4)} for s in SCAN_SIZES
        ]
    return result


def report(result: dict) -> list[str]:
    lines = [f"{'size':>9} {'bare sweeps/s':>14} {'ebm sweeps/s':>13} {'ratio':>6} {'thin=1 sweeps/s':>16} {'ratio':>6}"]
    for row in result["rows"]:
        lines.append(
            f"{row['size']:>9} {row['bare_sweeps_per_s']:>14.1f} {row['ebm_sweeps_per_s']:>13.1f} {row['ratio']:>6.2f} "
            f"{row['thin1_sweeps_per_s']:>16.1f} {row['thin1_ratio']:>6.2f}"
        )
    for key, label in (("scan_chains", "chains"), ("scan_sizes", "size")):
        for row in result.get(key, []):
            lines.append(
                f"  {label} {row[label]!s:>9}: ebm {row['ebm']:>9.1f} sweeps/s, bare {row['bare']:>9.1f}, "
                f"ratio {row['ebm'] / row['bare']:.2f}"
            )
    return lines


def plot(result: dict, path: str) -> None:
    """Sweeps/s against chains and against model size, ebm and the bare products."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    chains = [r["chains"] for r in result["scan_chains"]]
    for key, style in (("bare", "--"), ("ebm", "-")):
        left.loglog(chains, [r[key] * r["chains"] for r in result["scan_chains"]], style, marker="o", label=key)
    left.set(xlabel="chains", ylabel="chain-sweeps / s", title="784x500")
    sizes = [r["size"] for r in result["scan_sizes"]]
    for key, style in (("bare", "--"), ("ebm", "-")):
        right.semilogy(sizes, [r[key] for r in result["scan_sizes"]], style, marker="o", label=key)
    right.set(xlabel="n_visible x n_hidden", ylabel="sweeps / s", title=f"{result['chains']} chains")
    left.legend()
    fig.suptitle(result["hardware"], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chains", type=int, default=1000)
    parser.add_argument("--sizes", default="784x500,64x100", help="comma-separated n_visible x n_hidden")
    parser.add_argument("--scan", action="store_true", help="also sweeps/s against chains and model size")
    parser.add_argument("--plot", default=None, help="with --scan: save the figure here")
    args = parser.parse_args()
    result = run(tuple(args.sizes.split(",")), args.chains, args.device, args.scan)
    print(f"hardware: {result['hardware']}; float32, {args.chains} chains")
    print("\n".join(report(result)))
    if args.scan and args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
