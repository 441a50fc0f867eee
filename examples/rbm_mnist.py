"""An RBM on binarized MNIST with its exact (few hidden units) or AIS log-likelihood.

With up to ~20 hidden units, log Z is a sum over the 2^n_hidden hidden states, so the test
log-likelihood is exact every epoch; the reference numbers for 16 hidden units are about
-149 nats (plain RBM) and -143 (centered RBM) (Melchior, Fischer & Wiskott 2016). With more
hidden units the per-epoch monitor is the pseudo-log-likelihood and the final test
log-likelihood comes from annealed importance sampling (``ebm.log_partition(method="ais")``).

The MNIST IDX files are read from ``--data-root``, ``$EBM_DATA/mnist`` or the user cache,
and downloaded (checksums verified) when absent.

    python examples/rbm_mnist.py --out figures                  # 16 hidden, 20 epochs: ~-150 nats, minutes
    python examples/rbm_mnist.py --centered --out figures       # the centered RBM
    python examples/rbm_mnist.py --hidden 500 --epochs 50       # AIS at the end
    python examples/rbm_mnist.py --fast --out /tmp/x            # a subset, seconds (CI runs this)

Writes ``rbm_mnist_loglik.png``, ``rbm_mnist_samples.png`` and ``rbm_mnist_filters.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from matplotlib.figure import Figure

import ebm
from ebm.datasets import mnist

#: largest hidden layer whose 2^n states are enumerated for the exact log Z every epoch
MAX_EXACT_HIDDEN = 20


def loglik_figure(history: list[dict], key: str, final: float | None, final_label: str) -> Figure:
    fig = Figure(figsize=(5, 3.4), layout="constrained")
    ax = fig.add_subplot()
    epochs = [h["epoch"] for h in history]
    for k, label in ((key.removeprefix("val_"), "train"), (key, "test")):
        ax.plot(epochs, [h[k] for h in history], marker="o", ms=3, label=label)
    if final is not None:
        ax.axhline(final, color="C3", ls="--", lw=1, label=final_label)
    what = "exact log-likelihood" if key == "val_log_likelihood" else "pseudo-log-likelihood"
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{what} (nats per image)")
    ax.legend(frameon=False)
    return fig


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="2,000 training images, 2 epochs (seconds; for CI)")
    parser.add_argument("--out", type=Path, default=Path("rbm-mnist-output"), help="folder for the PNG files")
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--centered", action="store_true", help="train a centered RBM (ebm.CenteredRBM + ebm.Centering)")
    parser.add_argument("--binarize", choices=("threshold", "stochastic"), default="threshold")
    parser.add_argument("--data-root", type=Path, help="folder of the four IDX gz files")
    parser.add_argument("--ais-betas", type=int, default=14_500, help="AIS steps (with more than 20 hidden units)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    train, _ = mnist("train", root=args.data_root, binarize=args.binarize)
    test, _ = mnist("test", root=args.data_root, binarize=args.binarize)
    epochs, n_steps = args.epochs, 1000
    if args.fast:
        train, test, epochs, n_steps = train[:2000], test[:1000], 2, 50
    exact = args.hidden <= MAX_EXACT_HIDDEN
    model = (ebm.CenteredRBM if args.centered else ebm.RBM)(784, args.hidden, seed=args.seed)
    print(f"{type(model).__name__} 784 x {args.hidden} on {len(train)} MNIST images ({args.binarize}), {epochs} epochs")
    history = ebm.fit(
        model,
        {"v": train},
        method="pcd",
        epochs=epochs,
        batch_size=100,
        lr=0.01,
        seed=args.seed,
        validation={"v": test},
        metrics=["log_likelihood"] if exact else ["pseudo_ll"],
        callbacks=[ebm.Centering()] if args.centered else [],
    )
    key = "val_log_likelihood" if exact else "val_pseudo_ll"
    for entry in history:
        print(f"epoch {entry['epoch']:>3}  test {key.removeprefix('val_')} {entry[key]:9.3f}  ({entry['time']:.0f} s)")

    final, final_label = None, ""
    if not exact:
        betas = 200 if args.fast else args.ais_betas
        log_z = ebm.log_partition(model, method="ais", n_betas=betas, n_runs=100, data={"v": train})
        final = ebm.log_likelihood(model, {"v": test}, log_z=log_z).mean().item()
        final_label = f"AIS test LL ({betas} betas)"
        print(f"log Z = {float(log_z):.2f} ± {log_z.stderr:.2f} (AIS); test log-likelihood {final:.2f} nats")

    chains = ebm.sample(model, ebm.Gibbs(), n_chains=64, n_steps=n_steps, thin=n_steps, seed=args.seed)
    with torch.no_grad():
        means = model.conditional("v", chains.last).probs  # the image behind each chain's last state
    args.out.mkdir(parents=True, exist_ok=True)
    figures = {
        "rbm_mnist_loglik.png": loglik_figure(list(history), key, final, final_label),
        "rbm_mnist_samples.png": ebm.plot.samples(means, block=f"p(v | h) after {n_steps} Gibbs sweeps"),
        "rbm_mnist_filters.png": ebm.plot.filters(model),
    }
    for name, fig in figures.items():
        fig.savefig(args.out / name, dpi=120)
    print(f"wrote {', '.join(figures)} to {args.out}")
    return {"test": history[-1][key], "final": final}


if __name__ == "__main__":
    main()
