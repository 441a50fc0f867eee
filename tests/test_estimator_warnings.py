"""Estimators that say when they are unreliable (issue 16, item 5): AIS whose runs are worth
too few effective samples, a Gaussian RBM on data far from standardised."""

import warnings

import pytest
from models import random_rbm

import ebm
from ebm.evaluation.partition import UnreliableEstimate


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
