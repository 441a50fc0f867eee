"""An RBM on the bundled 8x8 digits: CD-1 against PCD-1, with exact log-likelihoods.

With 16 hidden units the partition function is a sum over 2^16 hidden states, so the
test log-likelihood is exact every epoch. PCD keeps its chains between updates and
follows the model distribution; CD restarts them at the data and tends to leave spurious
modes in place, which shows in the samples of long chains more than in the likelihood.

    python examples/rbm_digits.py --out figures        # 30 epochs each, under a minute on 2 cores
    python examples/rbm_digits.py --fast --out /tmp/x  # seconds (CI runs this)

Writes ``rbm_digits_loglik.png`` (test log-likelihood per epoch for both methods),
``rbm_digits_samples.png`` (p(v | h) at the end of long Gibbs chains of the PCD model) and
``rbm_digits_filters.png`` (the PCD model's weights).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from matplotlib.figure import Figure

import ebm
from ebm.datasets import digits


def independent_pixels(train: torch.Tensor, test: torch.Tensor) -> float:
    """Mean test log-likelihood (nats) of independent pixels, add-one smoothed: the baseline."""
    p = (train.sum(0) + 1) / (len(train) + 2)
    return (test @ p.log() + (1 - test) @ (1 - p).log()).mean().item()


def loglik_figure(histories: dict[str, list[dict]], baseline: float) -> Figure:
    fig = Figure(figsize=(5, 3.4), layout="constrained")
    ax = fig.add_subplot()
    for label, history in histories.items():
        ax.plot([h["epoch"] for h in history], [h["val_log_likelihood"] for h in history], marker="o", ms=3, label=label)
    ax.axhline(baseline, color="0.5", ls="--", lw=1, label="independent pixels")
    ax.set_xlabel("epoch")
    ax.set_ylabel("exact test log-likelihood (nats per image)")
    ax.legend(frameon=False)
    return fig


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="2 epochs and short chains (seconds; for CI)")
    parser.add_argument("--out", type=Path, default=Path("rbm-digits-output"), help="folder for the PNG files")
    parser.add_argument("--hidden", type=int, default=16, help="hidden units (at most ~20 for exact log Z)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs, n_steps = (2, 100) if args.fast else (30, 2000)

    train, test = digits("train")[0], digits("test")[0]
    baseline = independent_pixels(train, test)
    print(f"8x8 digits: {len(train)} train, {len(test)} test rows; independent pixels: {baseline:.3f} nats")
    histories, models = {}, {}
    for method in ("cd", "pcd"):
        model = ebm.RBM(64, args.hidden, seed=args.seed)
        history = ebm.fit(
            model,
            {"v": train},
            method=method,
            k=1,
            epochs=epochs,
            batch_size=10,
            lr=0.01,
            seed=args.seed,
            validation={"v": test},
            metrics=["log_likelihood"],
        )
        label = f"{method.upper()}-1"
        histories[label], models[label] = list(history), model
        print(f"{label}: test log-likelihood {history[-1]['val_log_likelihood']:.3f} nats after {epochs} epochs")

    model = models["PCD-1"]
    chains = ebm.sample(model, ebm.Gibbs(), n_chains=64, n_steps=n_steps, thin=n_steps, seed=args.seed)
    with torch.no_grad():
        means = model.conditional("v", chains.last).probs  # the image behind each chain's last state
    args.out.mkdir(parents=True, exist_ok=True)
    figures = {
        "rbm_digits_loglik.png": loglik_figure(histories, baseline),
        "rbm_digits_samples.png": ebm.plot.samples(means, block=f"p(v | h) after {n_steps} Gibbs sweeps"),
        "rbm_digits_filters.png": ebm.plot.filters(model),
    }
    for name, fig in figures.items():
        fig.savefig(args.out / name, dpi=120)
    print(f"wrote {', '.join(figures)} to {args.out}")
    return {"baseline": baseline, **{k: h[-1]["val_log_likelihood"] for k, h in histories.items()}}


if __name__ == "__main__":
    main()
