"""Estimators that say when they are unreliable (issue 16, item 5): AIS whose runs are worth
too few effective samples, a Gaussian RBM on data far from standardised."""

import warnings

import pytest
import torch
from models import random_rbm

import ebm
import ebm.datasets
from ebm.evaluation.partition import UnreliableEstimate
from ebm.model import DataWarning


@pytest.fixture(scope="module")
def rbm():
    # uniform base (no data): one β step is plain importance sampling from the uniform
    # distribution, far from this model
    return random_rbm(16, 8, scale=1.0, seed=0)


def test_ais_with_too_few_betas_warns_and_says_which_way_it_is_biased(rbm):
    # over 150 seeds the runs were worth at most 1.3 effective samples (the bar is 10); the
    # sample ESS alone can look fine (12 here), since the runs missed the large weights
    with pytest.warns(UnreliableEstimate, match=r"biased low .*E\[log Z_hat\] <= log Z.*more betas"):
        ebm.log_partition(rbm, method="ais", n_betas=1, n_runs=100, seed=0)


def test_ais_with_a_good_schedule_does_not_warn(rbm):
    # over 150 seeds the runs were worth 60 to 81 effective samples, far above the bar of 10
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreliableEstimate)
        estimate = ebm.log_partition(rbm, method="ais", n_betas=300, n_runs=100, seed=0)
    assert estimate.info["var_log_w"] < 1


@pytest.fixture(scope="module")
def rings():
    x = ebm.datasets.toy2d("rings").sample(500, generator=torch.Generator().manual_seed(0))
    return x, (x - x.mean(0)) / x.std(0)


def test_gaussian_rbm_on_unstandardised_data_warns_in_fit_and_log_likelihood(rings):
    raw = rings[0] * 100  # sd ≈ 150 against the model's visible sd ≈ 0.5
    model = ebm.GaussianRBM(2, 4, seed=0)
    with pytest.warns(DataWarning, match=r"data block 'v' .* standardise each unit first"):
        ll = ebm.log_likelihood(model, {"v": raw})
    assert ll.mean() < -1e4  # what the warning is about: the quadratic term dominates
    with pytest.warns(DataWarning, match="standardise"):
        ebm.fit(model, {"v": raw}, epochs=1, batch_size=100, n_chains=20, seed=0, metrics=None, progress=False)


def test_gaussian_rbm_on_standardised_data_does_not_warn(rings):
    # data sd 1 against a model sd of at least 0.5: a factor 2, far below the bar of 10
    model = ebm.GaussianRBM(2, 4, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        ebm.fit(model, {"v": rings[1]}, epochs=2, batch_size=100, n_chains=20, seed=0, progress=False)
        ebm.log_likelihood(model, {"v": rings[1]})
