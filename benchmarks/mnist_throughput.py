"""MNIST PCD-1 training throughput on the CPU: ``ebm.fit`` against scikit-learn's ``BernoulliRBM``.

784 visible units, MNIST thresholded at 0.5, batch 100, float32. Three timings per size, in
alternation, best of ``repeats`` (a slow spell of a shared machine hits them alike):

- ebm: ``ebm.fit(rbm, {"v": X}, epochs=1, batch_size=100)``, every other option at its
  default (PCD-1, Adam), on ``rows`` rows; seconds per update.
- scikit-learn: ``BernoulliRBM(n_components, batch_size=100, n_iter=1).fit(X)`` on the
  same rows (float32 input, its PCD-1 with SGD); seconds per update.
- bare: the matrix products one PCD-1 update of 100 chains needs at the least: ``v W``
  (data), ``v W`` and ``h Wᵀ`` (one chain sweep) and ``Xᵀ P`` (the weight gradient over
  the 200 rows of both phases).

Epoch rate = 600 updates (60,000 rows / 100). Then, at 784x16, the exact test
log-likelihood (log Z by enumerating the 2^16 hidden states) of each library after the
same wall time: scikit-learn trains ``--sk-epochs`` epochs, ebm as many epochs as fit in
that time (from its measured epoch time).

    python benchmarks/mnist_throughput.py [--rows 10000] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import hardware
from sklearn.neural_network import BernoulliRBM

import ebm
from ebm.datasets.mnist import mnist

BATCH = 100
UPDATES_PER_EPOCH = 60_000 // BATCH


def _best(fns: dict, repeats: int) -> dict[str, float]:
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def throughput(x: torch.Tensor, n_hidden: int, repeats: int) -> dict:
    """Seconds per update of ebm, scikit-learn and the bare products on ``x``."""
    n_updates = x.shape[0] // BATCH
    x_np = x.numpy()
    W = torch.randn(784, n_hidden) * 0.01
    v, h, xp = x[:BATCH], (torch.rand(BATCH, n_hidden) < 0.5).float(), x[: 2 * BATCH]
    p = torch.rand(2 * BATCH, n_hidden)

    def bare():
        for _ in range(n_updates):
            v @ W
            v @ W
            h @ W.T
            xp.T @ p

    def ours():
        ebm.fit(ebm.RBM(784, n_hidden, seed=0), {"v": x}, epochs=1, batch_size=BATCH, metrics=None)

    def sklearn():
        BernoulliRBM(n_components=n_hidden, batch_size=BATCH, n_iter=1, random_state=0).fit(x_np)

    ours()  # first calls pay one-time costs
    best = _best({"bare": bare, "ebm": ours, "sklearn": sklearn}, repeats)
    per_update = {k: t / n_updates for k, t in best.items()}
    return {
        "size": f"784x{n_hidden}",
        "seconds_per_update": per_update,
        "epoch_seconds": {k: t * UPDATES_PER_EPOCH for k, t in per_update.items()},
        "ebm_vs_sklearn_epoch_rate": per_update["sklearn"] / per_update["ebm"],
        "ebm_vs_bare": per_update["bare"] / per_update["ebm"],
    }


def sklearn_rbm_as_ebm(model: BernoulliRBM) -> ebm.RBM:
    rbm = ebm.RBM(784, model.components_.shape[0]).double()
    with torch.no_grad():
        rbm.W.copy_(torch.from_numpy(model.components_.T.astype(np.float64)))
        rbm.a.copy_(torch.from_numpy(model.intercept_visible_.astype(np.float64)))
        rbm.b.copy_(torch.from_numpy(model.intercept_hidden_.astype(np.float64)))
    return rbm


def equal_time_log_likelihood(x: torch.Tensor, test: torch.Tensor, sk_epochs: int) -> dict:
    """Exact test LL of 784x16 models trained for the same wall time."""
    start = time.perf_counter()
    model = BernoulliRBM(n_components=16, batch_size=BATCH, n_iter=sk_epochs, random_state=0).fit(x.numpy())
    sk_time = time.perf_counter() - start
    sk_ll = ebm.log_likelihood(sklearn_rbm_as_ebm(model), {"v": test.double()}).mean().item()
    probe = ebm.fit(ebm.RBM(784, 16, seed=0), {"v": x}, epochs=1, batch_size=BATCH, metrics=None)
    epochs = max(1, int(sk_time / probe[-1]["time"]))
    rbm = ebm.RBM(784, 16, seed=0)
    history = ebm.fit(rbm, {"v": x}, epochs=epochs, batch_size=BATCH, metrics=None)
    ours = ebm.log_likelihood(rbm.double(), {"v": test.double()}).mean().item()
    return {
        "sklearn": {"epochs": sk_epochs, "seconds": sk_time, "test_ll": sk_ll},
        "ebm": {"epochs": epochs, "seconds": history[-1]["time"], "test_ll": ours},
    }


def run(rows: int = 10_000, repeats: int = 2, sk_epochs: int = 2, sizes: tuple[int, ...] = (500, 16)) -> dict:
    x = mnist("train")[0][:rows].float()
    test = mnist("test")[0].float()
    result = {"hardware": hardware(), "rows": rows, "batch": BATCH}
    result["throughput"] = [throughput(x, n, repeats) for n in sizes]
    result["equal_time_784x16"] = equal_time_log_likelihood(mnist("train")[0].float(), test, sk_epochs)
    return result


def report(result: dict) -> list[str]:
    lines = [
        f"{'size':>8} {'bare s/epoch':>13} {'ebm s/epoch':>12} {'sklearn s/epoch':>16} {'ebm/sklearn rate':>17} "
        f"{'ebm/bare':>9}"
    ]
    for row in result["throughput"]:
        e = row["epoch_seconds"]
        lines.append(
            f"{row['size']:>8} {e['bare']:>13.2f} {e['ebm']:>12.2f} {e['sklearn']:>16.2f} "
            f"{row['ebm_vs_sklearn_epoch_rate']:>16.2f}x {row['ebm_vs_bare']:>9.2f}"
        )
    eq = result["equal_time_784x16"]
    for name in ("sklearn", "ebm"):
        r = eq[name]
        lines.append(f"784x16 {name:>8}: {r['epochs']} epochs in {r['seconds']:.1f} s, exact test LL {r['test_ll']:.2f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="training rows per timed epoch")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sk-epochs", type=int, default=2, help="scikit-learn epochs of the equal-time 784x16 runs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args.rows, args.repeats, args.sk_epochs)
    print(f"hardware: {result['hardware']}")
    print("\n".join(report(result)))


if __name__ == "__main__":
    main()
