"""Clear one-line errors for user energies that torch would reject deep inside a sampler or an
estimator (issue 16, item 7): a wrong shape, an integer dtype."""

import pytest
import torch
from models import Ising
from stattools import z_threshold

import ebm

# One two-sided normal comparison at a false-alarm rate of 1e-3 (over 60 seeds the z-scores of
# the test below had mean -0.1, sd 1.03, max |z| 2.6).
Z = z_threshold(1)  # one AIS check, two-sided, false-alarm rate 1e-3


class ColumnEnergy(ebm.EnergyModel):
    """Forgets to reduce the last dimension: energy of shape (batch, 1)."""

    def __init__(self):
        super().__init__(s=ebm.Spin(3))

    def energy(self, state):
        return -state["s"].sum(-1, keepdim=True)


class IntegerEnergy(ebm.EnergyModel):
    """Casts to an integer type: energy of dtype int64."""

    def __init__(self):
        super().__init__(s=ebm.Spin(3))

    def energy(self, state):
        return -state["s"].long().sum(-1)


def data(model, n=6):
    return {"s": model.random_state(n, generator=torch.Generator().manual_seed(0))["s"]}


USES = {
    "gibbs": lambda m: ebm.sample(m, ebm.Gibbs(), n_chains=5, n_steps=3),
    "exact-log-z": lambda m: ebm.log_partition(m),
    "ais": lambda m: ebm.log_partition(m, method="ais", n_betas=10, n_runs=4),
    "log-likelihood": lambda m: ebm.log_likelihood(m, data(m), log_z=0.0),
}


@pytest.mark.parametrize("use", USES.values(), ids=USES.keys())
def test_energy_of_the_wrong_shape_is_named(use):
    with pytest.raises(ValueError, match=r"ColumnEnergy\.energy must return shape \(\d+,\).*got \(\d+, 1\)"):
        use(ColumnEnergy())


@pytest.mark.parametrize("use", USES.values(), ids=USES.keys())
def test_integer_energy_is_named(use):
    with pytest.raises(TypeError, match=r"IntegerEnergy\.energy returned a torch\.int64 tensor; .*floating point"):
        use(IntegerEnergy())


def test_ais_runs_on_a_model_with_a_single_block():
    # nothing to condition on, so nothing is summed out (this used to raise StopIteration)
    model = Ising(2, 0.3)
    estimate = ebm.log_partition(model, method="ais", n_betas=200, n_runs=64, seed=0)
    exact = ebm.log_partition(model)
    assert estimate.info["summed"] is None
    assert abs(estimate - exact) < Z * estimate.stderr
