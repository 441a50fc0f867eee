"""Parallel tempering: exact β = 1 marginals, mode weights of a bimodal target where plain
Gibbs stays stuck, recorded swap rates, adaptive spacing, PT-PCD training."""

import math

import pytest
import torch
from models import random_rbm
from stattools import chi_square_pvalue, state_index, z_threshold

import ebm
import ebm.datasets
from ebm.samplers.tempering import TemperingState

ALPHA = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")


class CurieWeiss(ebm.EnergyModel):
    """Mean-field ferromagnet ``E = −J/n (Σs)² − h Σs``: two modes (all up, all down)
    separated by a barrier of ~J·n nats; the field ``h`` makes the up mode heavier."""

    def __init__(self, n, J, h):
        super().__init__(s=ebm.Spin(n))
        self.n, self.J, self.h = n, J, h

    def energy(self, state):
        m = state["s"].sum(-1)
        return -self.J / self.n * m**2 - self.h * m


def exact_up_weight(model):
    k = torch.arange(2**model.n)
    s = ((k[:, None] >> torch.arange(model.n)) & 1).float() * 2 - 1
    p = torch.softmax(-model.energy({"s": s}), 0)
    return p[s.sum(-1) > 0].sum().item()


@pytest.fixture(scope="module")
def bimodal():
    return CurieWeiss(12, 2.0, 0.03)


def test_pt_recovers_mode_weights_where_gibbs_is_stuck(bimodal):
    p_up = exact_up_weight(bimodal)
    n = 400
    init = {"s": -torch.ones(n, 12)}  # every chain starts in the lighter mode
    gibbs = ebm.sample(bimodal, ebm.Gibbs(), n_steps=200, init=init, seed=0)
    pt = ebm.sample(bimodal, ebm.ParallelTempering(ebm.Gibbs(), 8, beta_min=0.05), n_steps=300, init=init, seed=0)
    # the final states of independent chains are independent draws: binomial standard error
    se = math.sqrt(p_up * (1 - p_up) / n)
    gibbs_up = (gibbs["s"][-1].sum(-1) > 0).double().mean().item()
    pt_up = (pt["s"][-1].sum(-1) > 0).double().mean().item()
    assert abs(gibbs_up - p_up) > 10 * se  # stuck
    assert abs(pt_up - p_up) < 4 * se, (pt_up, p_up)


class TwoWells(ebm.EnergyModel):
    """Equal mixture of N(−3, 0.5²) and N(3, 0.5²): a barrier of 18 nats between the modes."""

    def __init__(self):
        super().__init__(x=ebm.Real(1))

    def energy(self, state):
        x = state["x"][:, 0]
        return -torch.logaddexp(-((x - 3) ** 2) / 0.5, -((x + 3) ** 2) / 0.5)


@pytest.mark.parametrize(
    ("inner", "n_steps"),
    [(ebm.Langevin(0.3, adapt_step_size=False, adapt_mass=False), 800),
     (ebm.HMC(0.3, 5, adapt_step_size=False, adapt_mass=False), 300)],
    ids=["mala", "hmc"],
)  # fmt: skip
def test_pt_with_a_gradient_sampler_balances_two_wells(inner, n_steps):
    # A swap moves states between replicas: the inner sampler's cached energy and gradient
    # must follow them (without that refresh no chain ever reaches the right well).
    n = 100
    pt = ebm.ParallelTempering(inner, 6, beta_min=0.05)
    chains = ebm.sample(TwoWells(), pt, n_steps=n_steps, init={"x": torch.full((n, 1), -3.0)}, seed=5)
    # final states of independent chains: a binomial fraction, exactly 1/2 at equilibrium
    right = (chains.sampler_state.state["x"][:, 0] > 0).double().mean().item()
    z = (right - 0.5) / math.sqrt(0.25 / n)
    assert abs(z) < z_threshold(1), (right, z)


def test_swap_rates_are_recorded_per_pair(bimodal):
    betas = [1.0, 0.5, 0.25, 0.1]
    chains = ebm.sample(bimodal, ebm.ParallelTempering(ebm.Gibbs(), betas), n_chains=50, n_steps=40, seed=1)
    keys = [f"swap_prob_{r}" for r in range(3)]
    for key in keys:
        assert chains.stats[key].shape == (40, 50)
        assert ((chains.stats[key] >= 0) & (chains.stats[key] <= 1)).all()
    assert chains["s"].shape == (40, 50, 12)
    assert chains.energy.shape == (40, 50)
    assert torch.allclose(chains.energy[-1], bimodal.energy(chains.last))
    summary = chains.summary()
    assert all(f"mean {key}" in summary.sampler for key in keys)
    state = chains.sampler_state
    assert isinstance(state, TemperingState) and state.inner.state["s"].shape == (200, 12)


def test_pt_beta_one_replica_is_exact_on_a_tiny_rbm():
    rbm = random_rbm(4, 3, scale=1.5, seed=2)
    pt = ebm.ParallelTempering(ebm.Gibbs(), [1.0, 0.6, 0.3])
    chains = ebm.sample(rbm, pt, n_chains=4000, n_steps=1, burn_in=30, seed=3)
    v = torch.tensor([[(k >> i) & 1 for i in range(4)] for k in range(16)], dtype=torch.float64)
    probs = torch.softmax(-rbm.free_energy({"v": v}).detach(), 0)
    counts = torch.bincount(state_index(chains["v"][-1]), minlength=16)
    assert chi_square_pvalue(counts, probs) > ALPHA


def test_adaptive_spacing_equalises_swap_rates(bimodal):
    init = {"s": -torch.ones(100, 12)}
    fixed = ebm.sample(bimodal, ebm.ParallelTempering(ebm.Gibbs(), 8, beta_min=0.05), n_steps=100, init=init, seed=4)
    adaptive = ebm.ParallelTempering(ebm.Gibbs(), 8, beta_min=0.05, adapt=True)
    adapted = ebm.sample(bimodal, adaptive, n_steps=100, burn_in=250, init=init, seed=4)

    def spread(chains):
        rates = torch.stack([chains.stats[f"swap_prob_{r}"].mean() for r in range(7)])
        return (rates.max() - rates.min()).item()

    betas = adapted.sampler_state.betas
    assert betas[0] == 1.0 and betas[-1].item() == pytest.approx(0.05, abs=1e-6)
    assert bool((betas.diff() < 0).all())
    assert spread(adapted) < 0.5 * spread(fixed)
    assert torch.allclose(adaptive.betas, fixed.sampler_state.betas.double())  # the settings are not mutated


def test_pt_as_the_negative_phase_of_training():
    x, _ = ebm.datasets.digits(dtype=torch.float64)
    rbm = ebm.RBM(64, 8, seed=0).double()
    pt = ebm.ParallelTempering(ebm.Gibbs(), [1.0, 0.8, 0.6])
    history = ebm.fit(
        rbm, {"v": x}, sampler=pt, epochs=3, batch_size=20, lr=0.05, n_chains=50, metrics=["log_likelihood"], progress=False
    )
    untrained = ebm.RBM(64, 8, seed=0).double()
    untrained.init_visible_bias(x)
    baseline = ebm.log_likelihood(untrained, {"v": x}).mean().item()
    assert history["log_likelihood"][-1] > baseline + 0.5


def test_pt_rejects_bad_betas():
    with pytest.raises(ValueError, match=r"including 1\.0"):
        ebm.ParallelTempering(ebm.Gibbs(), [0.9, 0.5])
    with pytest.raises(ValueError, match="distinct"):
        ebm.ParallelTempering(ebm.Gibbs(), [1.0, 0.5, 0.5])
    with pytest.raises(ValueError, match="at least 2"):
        ebm.ParallelTempering(ebm.Gibbs(), 1)
    with pytest.raises(TypeError, match="another"):
        ebm.ParallelTempering(ebm.ParallelTempering(ebm.Gibbs(), 2), 2)
    with pytest.raises(TypeError, match="sampler"):
        ebm.ParallelTempering("gibbs", 2)
