"""Every CPU benchmark of the project in one command: ``python -m benchmarks``.

Runs, in this order, each with its anchor measured in the same run:

1. ``gibbs``: RBM block-Gibbs sweeps/s (784x500 and 64x100, 1000 chains) ÷ the bare
   products; sweeps/s against chains and model size (the docs' figure).
2. ``digits``: ``ebm.fit`` with every default on the 8x8 digits against scikit-learn's
   ``BernoulliRBM`` (time to pass its log-likelihood ÷ its time; final exact LL).
3. ``mnist``: PCD-1 epochs of a 784x500 RBM, batch 100, against scikit-learn's and the bare
   products; exact test LL of 784x16 models at equal wall time.
4. ``mcmc``: batched MALA/HMC against Pyro's NUTS (``benchmarks/mcmc_vs_pyro.py``, min-ESS/s).

Prints each result as a ratio against its anchor, writes ``benchmarks/results.json`` and
rewrites the generated section of ``benchmarks/RESULTS.md`` (between the markers), and the
figure ``docs/figures/benchmark_sweeps.png``. About 10 minutes on an idle 2-core machine.

    python -m benchmarks [--only gibbs,digits,mnist,mcmc] [--no-write]

The GPU checks (``gpu_check.py``) and the hour-long MNIST AIS benchmark (``mnist_rbm.py``)
are not part of it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import digits_rbm  # noqa: E402
import gibbs  # noqa: E402
import mnist_throughput  # noqa: E402
import torch  # noqa: E402

BEGIN = "<!-- python -m benchmarks: begin -->"
END = "<!-- python -m benchmarks: end -->"
TARGETS = {
    "gibbs 784x500 ratio": 0.85,
    "gibbs 64x100 ratio": 0.6,
    "digits pass time ratio (below)": 1.0,
    "digits final LL": -17.3,
    "mnist 784x500 epoch rate vs sklearn": 5.0,
}


def run_gibbs() -> dict:
    return gibbs.run(scan=True)


def run_digits() -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 64x16 products gain nothing from threads; scikit-learn is single-threaded too
    try:
        return digits_rbm.run()
    finally:
        torch.set_num_threads(threads)


def run_mnist() -> dict:
    return mnist_throughput.run()


def run_mcmc() -> dict:
    out = subprocess.run(
        [sys.executable, str(HERE / "mcmc_vs_pyro.py"), "--threads", "1"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
    )
    return {"lines": out.stdout.strip().splitlines()}


BENCHMARKS = {"gibbs": run_gibbs, "digits": run_digits, "mnist": run_mnist, "mcmc": run_mcmc}
REPORTS = {
    "gibbs": gibbs.report,
    "digits": digits_rbm.report,
    "mnist": mnist_throughput.report,
    "mcmc": lambda r: r["lines"],
}


def headline(results: dict) -> list[tuple[str, float, float]]:
    """(what, measured, target) for each target of the issue that this run measured."""
    rows = []
    if "gibbs" in results:
        for row in results["gibbs"]["rows"]:
            key = f"gibbs {row['size']} ratio"
            if key in TARGETS:
                rows.append((key, row["ratio"], TARGETS[key]))
    if "digits" in results:
        d = results["digits"]
        rows.append(("digits pass time ratio (below)", d["pass_time_ratio"] or float("inf"), 1.0))
        rows.append(("digits final LL", d["ebm_final_ll"], -17.3))
    if "mnist" in results:
        row = next(r for r in results["mnist"]["throughput"] if r["size"] == "784x500")
        rows.append(("mnist 784x500 epoch rate vs sklearn", row["ebm_vs_sklearn_epoch_rate"], 5.0))
    return rows


def warm_kernels() -> dict:
    """Build or load the compiled kernels (``ebm.ops.kernels``) before any timing, so that no
    benchmark pays a first build; returns how long that took and whether they are in use."""
    from ebm.ops import kernels

    start = time.perf_counter()
    ready = kernels.kernels() is not None
    return {"ready": ready, "enabled": kernels.enabled(), "seconds": time.perf_counter() - start}


def kernels_line(k: dict) -> str:
    if k["ready"]:
        return (
            f"Compiled kernels (`ebm.ops.kernels`): ready in {k['seconds']:.2f} s before the timings (a first build "
            "compiles them, ~25-45 s on this machine; later runs load torch's extensions cache)."
        )
    why = "disabled (EBM_KERNELS=0)" if not k["enabled"] else "unavailable (no compiler/ninja or a failed build)"
    return f"Compiled kernels (`ebm.ops.kernels`): {why}; the eager torch paths were timed."


def markdown(results: dict) -> str:
    load = results["load_average"]
    lines = [
        BEGIN,
        "## Latest `python -m benchmarks` run",
        "",
        f"{results['hardware']}; load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the start "
        f"(1/5/15 min); {results['seconds']:.0f} s in all. Every ratio is against an anchor timed in the same run.",
        "",
        kernels_line(results["kernels"]),
        "",
        "| target | measured | target | met |",
        "|---|---:|---:|:---:|",
    ]
    for what, value, target in headline(results):
        met = value < target if "(below)" in what else value >= target
        lines.append(
            f"| {what.replace(' (below)', '')} | {value:.3g} | {'<' if '(below)' in what else '≥'} {target:g} | "
            f"{'yes' if met else 'no'} |"
        )
    for name in BENCHMARKS:
        if name in results:
            lines += ["", f"`{name}`:", "", "```", *REPORTS[name](results[name]), "```"]
    lines.append(END)
    return "\n".join(lines)


def update_results_md(text: str, path: Path) -> None:
    old = path.read_text()
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + text + old[old.index(END) + len(END) :]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description="every CPU benchmark of ebm, with ratios to anchors from the same run")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset of " + ",".join(BENCHMARKS))
    parser.add_argument("--no-write", action="store_true", help="print only: no JSON, RESULTS.md or figure")
    parser.add_argument("--json", default=str(HERE / "results.json"))
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}")
    start = time.perf_counter()
    results = {"load_average": os.getloadavg(), "hardware": gibbs.hardware(), "kernels": warm_kernels()}
    print(kernels_line(results["kernels"]), flush=True)
    for name in names:
        t = time.perf_counter()
        results[name] = BENCHMARKS[name]()
        print(f"== {name} ({time.perf_counter() - t:.0f} s)")
        print("\n".join(REPORTS[name](results[name])), flush=True)
    results["seconds"] = time.perf_counter() - start
    print("== targets")
    for what, value, target in headline(results):
        print(f"  {what}: {value:.3g} (target {'<' if '(below)' in what else '>='} {target:g})")
    print(f"total {results['seconds']:.0f} s")
    if args.no_write:
        return
    Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    update_results_md(markdown(results), HERE / "RESULTS.md")
    if "gibbs" in results:
        gibbs.plot(results["gibbs"], str(ROOT / "docs" / "figures" / "benchmark_sweeps.png"))


if __name__ == "__main__":
    main()
