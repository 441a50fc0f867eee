"""How much of an ``ebm train`` run on MNIST goes into the per-epoch metrics.

Trains ``RBM(784, 16)`` (the README's ``ebm train --dataset mnist --hidden 16`` settings:
PCD-1, batch 100, validation on the test set) for ``--epochs`` epochs twice: with the
metrics on every row each epoch (the old behaviour) and with the defaults (a fixed subsample
of ``AUTO_EVAL_ROWS`` rows, evaluated as often as keeps them under a fifth of the run).
Prints training and evaluation seconds and their ratio for both, measured in the same run.

    EBM_DATA=/path/to/data python benchmarks/evaluation_cost.py [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import ebm
from ebm.datasets import mnist


class Clock:
    """Splits a run's wall time into training (history ``time``) and the rest (evaluation)."""

    def on_train_begin(self, trainer):
        self.start = time.perf_counter()


def run(train, test, epochs: int, **options) -> tuple[float, float, str]:
    clock = Clock()
    trainer = ebm.Trainer(ebm.RBM(784, 16, seed=0), callbacks=[clock], progress=False, **options)
    history = trainer.fit({"v": train}, epochs, validation={"v": test})
    total = time.perf_counter() - clock.start
    training = history[-1]["time"]
    return training, total - training, trainer.evaluation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    train, test = mnist("train")[0], mnist("test")[0]
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    for label, options in (
        ("every row, every epoch", {"evaluate_rows": None, "evaluate_every": 1}),
        ("defaults", {}),
    ):
        training, evaluation, plan = run(train, test, args.epochs, **options)
        share = evaluation / (training + evaluation)
        print(f"{label:24s} training {training:7.1f} s  evaluation {evaluation:7.1f} s  ({share:.0%} of the run; {plan})")


if __name__ == "__main__":
    main()
