"""scikit-learn's gallery example "Restricted Boltzmann Machine features for digit
classification", with scikit-learn's ``BernoulliRBM`` and with ``ebm.sklearn.BernoulliRBM``
in the same pipeline, settings and data.

The 8x8 digits, nudged by one pixel in four directions (5x the rows), scaled to [0, 1],
split 80/20 (``random_state=0``); ``Pipeline([("rbm", RBM), ("logistic",
LogisticRegression(solver="newton-cg", C=6000))])`` with ``n_components=100,
learning_rate=0.06, n_iter=10, batch_size=10, random_state=0``, as in the gallery. Printed
for each: test accuracy, the RBM's fit time (best of ``--repeats``, the two timed in
alternation so that a busy machine slows them alike), and the test log-likelihood. ``ebm``
is ``ebm.sklearn.BernoulliRBM()`` (its fused solver); "ebm, Trainer" the same estimator with
``solver="trainer"`` (the same updates through the generic ``ebm.Trainer``).

With 64 visible and 100 hidden units log Z is a sum over 2^64 states, too many to
enumerate: the log-likelihood is ``log p(v) = -F(v) - log Z`` with log Z by annealed
importance sampling (its standard error printed), both models through ``ebm``; the exact
pseudo-log-likelihood (every pixel flipped in turn) is printed too. The pixels are grey
levels in [0, 1] (probabilities of 1, scikit-learn's convention), so these are the
mean-field values of the formulas, comparable between the two models, not probabilities
of binary images.

    python examples/sklearn_pipeline.py              # ~1 minute on 2 cores
    python examples/sklearn_pipeline.py --fast       # seconds: fewer rows and steps
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from scipy.ndimage import convolve
from sklearn import datasets
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import BernoulliRBM as SklearnRBM
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import minmax_scale

import ebm
from ebm.sklearn import BernoulliRBM, MeanFieldRBM

SETTINGS = {"n_components": 100, "learning_rate": 0.06, "n_iter": 10, "random_state": 0}


def nudge_dataset(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The gallery's augmentation: each image shifted by one pixel left, right, down, up."""
    directions = [
        [[0, 1, 0], [0, 0, 0], [0, 0, 0]],
        [[0, 0, 0], [1, 0, 0], [0, 0, 0]],
        [[0, 0, 0], [0, 0, 1], [0, 0, 0]],
        [[0, 0, 0], [0, 0, 0], [0, 1, 0]],
    ]

    def shift(x, w):
        return convolve(x.reshape((8, 8)), mode="constant", weights=w).ravel()

    X = np.concatenate([X] + [np.apply_along_axis(shift, 1, X, w) for w in directions])
    return X, np.concatenate([y] * 5)


def pipeline(rbm) -> Pipeline:
    return Pipeline([("rbm", rbm), ("logistic", LogisticRegression(solver="newton-cg", C=6000))])


def as_ebm_model(rbm) -> MeanFieldRBM:
    """Either fitted RBM's weights in an ``ebm`` model, to evaluate both the same way."""
    n_hidden, n_visible = rbm.components_.shape
    model = MeanFieldRBM(n_visible, n_hidden).double()
    with torch.no_grad():
        model.W.copy_(torch.from_numpy(np.asarray(rbm.components_, np.float64).T))
        model.a.copy_(torch.from_numpy(np.asarray(rbm.intercept_visible_, np.float64)))
        model.b.copy_(torch.from_numpy(np.asarray(rbm.intercept_hidden_, np.float64)))
    return model


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the comparison; returns ``{rbm: {"accuracy", "fit_time", "log_likelihood",
    "pseudo_ll"}}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="fits of each RBM; the best time is printed")
    parser.add_argument("--n-betas", type=int, default=10_000, help="AIS intermediate distributions")
    parser.add_argument("--fast", action="store_true", help="a quick smoke run (not the gallery's numbers)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # 64x100 products gain nothing from threads

    X, y = datasets.load_digits(return_X_y=True)
    X, y = nudge_dataset(np.asarray(X, "float32"), y)
    X = minmax_scale(X, feature_range=(0, 1))
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    settings, n_betas = dict(SETTINGS), args.n_betas
    if args.fast:
        X_train, y_train, settings["n_iter"], n_betas = X_train[:1000], y_train[:1000], 2, 500

    rbms = {
        "scikit-learn": lambda: SklearnRBM(**settings),
        "ebm": lambda: BernoulliRBM(**settings),
        "ebm, Trainer": lambda: BernoulliRBM(**settings, solver="trainer"),
    }
    fitted, times = {}, {name: [] for name in rbms}
    for _ in range(args.repeats):
        for name, make in rbms.items():
            pipe = pipeline(make())
            start = time.perf_counter()
            pipe.named_steps["rbm"].fit(X_train)
            times[name].append(time.perf_counter() - start)
            features = pipe.named_steps["rbm"].transform(X_train)
            pipe.named_steps["logistic"].fit(features, y_train)
            fitted[name] = pipe

    load = os.getloadavg()[0]
    print(f"settings: {settings}, {len(X_train)} training and {len(X_test)} test rows, load average {load:.2f}")
    v_test = torch.from_numpy(np.asarray(X_test, np.float64))
    print(f"{'':14}{'accuracy':>10}{'fit time (s)':>14}{'test LL (AIS, nats)':>24}{'test PLL (exact)':>18}")
    results = {}
    for name, pipe in fitted.items():
        accuracy = pipe.score(X_test, y_test)
        model = as_ebm_model(pipe.named_steps["rbm"])
        log_z = ebm.log_partition(model, method="ais", n_betas=n_betas, n_runs=100, seed=0, data={"v": v_test})
        ll = ebm.log_likelihood(model, {"v": v_test}, log_z=log_z).mean().item()
        pll = ebm.evaluation.pseudo.pseudo_log_likelihood(model, {"v": v_test}).mean().item()
        results[name] = {"accuracy": accuracy, "fit_time": min(times[name]), "log_likelihood": ll, "pseudo_ll": pll}
        print(f"{name:16}{accuracy:>10.4f}{min(times[name]):>14.2f}{ll:>15.2f} ± {log_z.stderr:<6.2f}{pll:>18.2f}")
    for name in ("ebm", "ebm, Trainer"):
        print(f"{name} fit time / scikit-learn fit time: {min(times[name]) / min(times['scikit-learn']):.2f}")
    return results


if __name__ == "__main__":
    main()
