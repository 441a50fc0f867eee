"""AIS against exact log Z, RAISE on the other side of the exact log-likelihood, the
tempered path and the independent base model.

Tolerances are multiples of the estimators' own standard errors: Z is the Bonferroni
threshold over the default run's 11 z-checks, so a correct estimator fails a run with
probability below 1e-3 on any seed (checked over 20 seed offsets).
"""

import math

import pytest
import torch
from models import random_rbm
from stattools import z_threshold

import ebm
import ebm.datasets
from ebm.evaluation.ais import annealing_schedule, weight_summary
from ebm.evaluation.bounds import raise_log_likelihood
from ebm.models import Independent, Tempered
from ebm.models.tempered import mix

Z = z_threshold(11)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    x, _ = ebm.datasets.digits(dtype=torch.float64)
    return x[:1500], x[1500:]


@pytest.fixture(scope="module")
def fitted(digits):
    """RBMs with 10, 14 and 18 hidden units fitted to the 8x8 digits (different seeds)."""
    train, _ = digits
    models = []
    for seed, n_hidden in enumerate((10, 14, 18)):
        rbm = ebm.RBM(64, n_hidden, seed=seed).double()
        ebm.fit(rbm, {"v": train}, epochs=4, batch_size=50, lr=0.01, seed=seed, metrics=None, progress=False)
        models.append(rbm)
    return models


@pytest.mark.parametrize(
    "index", [0, 1, pytest.param(2, marks=pytest.mark.slow)], ids=["10-hidden", "14-hidden", "18-hidden"]
)
def test_ais_matches_exact_log_z_on_fitted_rbms(fitted, digits, index):
    rbm = fitted[index]
    exact = ebm.log_partition(rbm)
    estimate = ebm.log_partition(rbm, method="ais", n_betas=500, n_runs=100, data={"v": digits[0]}, seed=index)
    assert estimate.method == "ais" and estimate.info["summed"] == "h"
    assert estimate.stderr > 0
    assert abs(float(estimate) - float(exact)) < Z * estimate.stderr, (float(estimate), float(exact), estimate.stderr)
    lo, hi = estimate.interval
    assert lo < float(exact) < hi
    assert 50 < estimate.ess <= 100


@pytest.mark.slow
def test_ais_without_summing_out_also_matches(fitted, digits):
    rbm = fitted[0]
    exact = ebm.log_partition(rbm)
    estimate = ebm.log_partition(rbm, method="ais", n_betas=2000, n_runs=200, data={"v": digits[0]}, summed=None, seed=5)
    assert estimate.info["summed"] is None
    assert abs(float(estimate) - float(exact)) < Z * estimate.stderr


def test_ais_on_a_random_rbm_with_a_uniform_base():
    rbm = random_rbm(10, 6, scale=1.0, seed=4)
    exact = ebm.log_partition(rbm)
    estimate = ebm.log_partition(rbm, method="ais", n_betas=1000, n_runs=100, schedule="linear", seed=1)
    assert abs(float(estimate) - float(exact)) < Z * estimate.stderr


def test_ais_on_a_gaussian_rbm_mixes_normal_and_bernoulli_conditionals():
    # continuous v with Normal conditionals tempered against the base's Normal, h summed out
    grbm = ebm.GaussianRBM(5, 6).double()
    with torch.no_grad():
        grbm.W.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    exact = ebm.log_partition(grbm)
    x = ebm.sample(grbm, ebm.Gibbs(), n_chains=500, n_steps=1, burn_in=100, seed=0).last["v"]
    estimate = ebm.log_partition(grbm, method="ais", n_betas=500, n_runs=100, data={"v": x}, seed=0)
    assert estimate.info["summed"] == "h"
    assert abs(float(estimate) - float(exact)) < Z * estimate.stderr


class Gaussian(ebm.EnergyModel):
    """``E(x) = ½ (x − m)ᵀ A (x − m)``: ``log Z = d/2 log 2π − ½ log det A``."""

    def __init__(self, d, seed=0):
        super().__init__(x=ebm.Real(d))
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        self.A = torch.nn.Parameter(q @ torch.diag(torch.linspace(0.5, 3.0, d, dtype=torch.float64)) @ q.T)
        self.m = torch.nn.Parameter(torch.randn(d, generator=g, dtype=torch.float64))

    def energy(self, state):
        y = state["x"] - self.m
        return 0.5 * ((y @ self.A) * y).sum(-1)

    def log_z(self):
        d = self.m.numel()
        return 0.5 * d * math.log(2 * math.pi) - 0.5 * torch.logdet(self.A).item()


def test_ais_matches_closed_form_log_z_of_a_gaussian_energy_with_mala():
    from ebm.samplers.langevin import Langevin

    model = Gaussian(4)
    mala = Langevin(0.3, adapt_step_size=False, adapt_mass=False)
    estimate = ebm.log_partition(model, method="ais", n_betas=300, n_runs=200, sampler=mala, schedule="linear", seed=2)
    assert estimate.info["summed"] is None
    assert abs(float(estimate) - model.log_z()) < Z * estimate.stderr, (float(estimate), model.log_z(), estimate.stderr)


def test_short_annealing_bounds_the_exact_log_likelihood_from_each_side():
    # a short schedule on a strongly coupled RBM: RAISE may only fall below the exact value
    # and forward AIS (log Z too low on average) only above it, each up to its noise. The
    # biases do not dominate that noise (over 30 seeds the paired RAISE z ran from -4.1 to
    # -1.0 and the AIS z from -1.9 to 1.7), so a bracket without noise would fail at random.
    rbm = random_rbm(12, 8, scale=1.5, seed=3)
    x = ebm.sample(rbm, ebm.Gibbs(), n_chains=600, n_steps=1, burn_in=300, seed=1).last["v"]
    exact = ebm.log_likelihood(rbm, {"v": x[:200]})
    short = ebm.log_likelihood_bounds(rbm, {"v": x[:200]}, n_betas=10, n_runs=50, base_data={"v": x[200:]})
    diff = short.lower_rows - exact
    assert diff.mean().item() < Z * diff.std().item() / math.sqrt(diff.numel())
    assert short.upper > exact.mean().item() - Z * short.upper_stderr


def test_raise_and_ais_agree_with_the_exact_log_likelihood_on_a_long_schedule(fitted, digits):
    rbm = fitted[1]
    train, test = digits
    exact = ebm.log_likelihood(rbm, {"v": test})
    # both within their errors of the exact value (paired per row for RAISE)
    long = ebm.log_likelihood_bounds(rbm, {"v": test}, n_betas=500, n_runs=100, base_data={"v": train})
    diff = long.lower_rows - exact
    assert diff.mean().item() < Z * diff.std().item() / math.sqrt(diff.numel())
    assert abs(diff.mean().item()) < Z * diff.std().item() / math.sqrt(diff.numel()) + 0.05
    assert abs(long.upper - exact.mean().item()) < Z * long.upper_stderr
    assert "RAISE lower" in str(long)


def test_raise_on_a_gaussian_energy_is_a_lower_bound():
    from ebm.samplers.langevin import Langevin

    model = Gaussian(3, seed=1)
    x = ebm.sample(model, Langevin(0.3), n_chains=100, n_steps=1, burn_in=300, seed=3).last["x"]
    exact = -model.energy({"x": x}).detach() - model.log_z()
    mala = Langevin(0.3, adapt_step_size=False, adapt_mass=False)
    lower = raise_log_likelihood(model, {"x": x}, 200, schedule="linear", sampler=mala, seed=4)
    diff = lower - exact
    assert diff.mean().item() < Z * diff.std().item() / math.sqrt(diff.numel())
    assert abs(diff.mean().item()) < 0.1


def test_raise_needs_summable_latents():
    class TwoLatent(ebm.EnergyModel):
        def __init__(self):
            super().__init__(v=ebm.Binary(2), h=ebm.Binary(2), g=ebm.Binary(2))

        def energy(self, state):
            return -(state["v"] * state["h"] * state["g"]).sum(-1)

    with pytest.raises(ValueError, match="summed out exactly"):
        raise_log_likelihood(TwoLatent(), {"v": torch.ones(3, 2)}, 5)


def test_schedules():
    sm = annealing_schedule("sm", 14_500)
    assert sm.numel() == 14_501 and sm[0] == 0 and sm[-1] == 1
    assert (sm < 0.5).sum() == 500 and ((sm >= 0.5) & (sm < 0.9)).sum() == 4000
    assert bool((sm.diff() > 0).all())
    lin = annealing_schedule("linear", 10)
    assert torch.allclose(lin, torch.linspace(0, 1, 11, dtype=torch.float64))
    assert annealing_schedule("sm", 100).numel() == 101
    custom = annealing_schedule(torch.tensor([0.0, 0.25, 1.0]))
    assert custom.tolist() == [0.0, 0.25, 1.0] and custom.dtype == torch.float64
    with pytest.raises(ValueError, match="increase strictly"):
        annealing_schedule(torch.tensor([0.0, 0.5, 0.4, 1.0]))
    with pytest.raises(ValueError, match="unknown schedule"):
        annealing_schedule("cosine", 10)
    with pytest.raises(ValueError, match="n_betas"):
        annealing_schedule("linear", 0)


def test_weight_summary_matches_direct_formulas():
    log_w = torch.log(torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64)) + 100.0
    s = weight_summary(log_w)
    w = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64)
    assert s["estimate"] == pytest.approx(100.0 + math.log(3.0))
    assert s["stderr"] == pytest.approx((w.std() / 2 / w.mean()).item())
    assert s["ess"] == pytest.approx((w.sum() ** 2 / (w**2).sum()).item())
    assert s["interval"][1] == pytest.approx(100 + math.log(3 + 3 * w.std().item() / 2))


def test_log_partition_result_is_a_float_with_uncertainty():
    rbm = random_rbm(6, 3, seed=0)
    z = ebm.log_partition(rbm, method="ais", n_betas=50, n_runs=10)
    assert isinstance(z, float) and z + 0 == float(z)
    assert z.interval[0] <= float(z) <= z.interval[1]
    assert z.info["log_weights"].shape == (10,)
    exact = ebm.log_partition(rbm)
    assert exact.interval == (float(exact), float(exact)) and exact.ess is None
    with pytest.raises(ValueError, match="unknown method"):
        ebm.log_partition(rbm, method="magic")
    with pytest.raises(ValueError, match="n_runs"):
        ebm.log_partition(rbm, method="ais", n_runs=0)
    with pytest.raises(ValueError, match="cannot be summed out"):
        ebm.log_partition(Gaussian(2), method="ais", n_betas=5, summed="x")
    with pytest.raises(ValueError, match="not a block"):
        ebm.log_partition(rbm, method="ais", n_betas=5, summed="q")


def test_independent_base_log_z_and_samples():
    rbm = random_rbm(5, 3, seed=2)
    data = (torch.rand(400, 5, generator=torch.Generator().manual_seed(0)) < 0.3).double()
    base = Independent.base_rate(rbm, {"v": data})
    assert base.log_partition().item() == pytest.approx(float(ebm.log_partition(base)))
    p = data.mean(0).clamp(1e-3, 1 - 1e-3)
    assert torch.allclose(torch.sigmoid(base.v_logits), p)
    assert torch.allclose(base.h_logits, torch.zeros(3, dtype=torch.float64))
    draws = base.sample(20_000, torch.Generator().manual_seed(1))["v"]
    se = (p * (1 - p) / 20_000).sqrt()
    assert ((draws.mean(0) - p).abs() < 4 * se).all()
    with pytest.raises(ValueError, match="unknown block"):
        Independent(rbm.variables, {"x": {"logits": torch.zeros(2)}})
    with pytest.raises(ValueError, match="positive"):
        Independent({"x": ebm.Real(2)}, {"x": {"scale": torch.tensor([1.0, -1.0])}})


def test_tempered_path_free_energy_and_log_z_by_enumeration():
    rbm = random_rbm(6, 4, seed=5)
    base = Independent(rbm.variables, {"v": {"logits": torch.linspace(-1, 1, 6)}}).double()
    v = ebm.sample(rbm, ebm.Gibbs(), n_chains=5, n_steps=1, seed=0).last["v"]
    for beta in (0.0, 0.4, 1.0):
        path = Tempered(rbm, beta, base)
        h = torch.tensor([[(k >> i) & 1 for i in range(4)] for k in range(16)], dtype=torch.float64)
        brute = torch.stack([-torch.logsumexp(-path.energy({"v": row.expand(16, 6), "h": h}), 0) for row in v])
        assert torch.allclose(path.free_energy({"v": v}), brute)
    assert float(ebm.log_partition(Tempered(rbm, 0.0, base))) == pytest.approx(base.log_partition().item())
    assert torch.allclose(Tempered(rbm, 1.0).free_energy({"v": v}), rbm.free_energy({"v": v}))


def test_tempered_per_chain_beta_and_conditionals():
    rbm = random_rbm(4, 3, seed=6)
    beta = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    path = Tempered(rbm, beta)
    state = ebm.sample(rbm, ebm.Gibbs(), n_chains=3, n_steps=1, seed=0).last
    assert torch.allclose(path.energy(state), beta * rbm.energy(state))
    logits = path.conditional("h", state).logits
    assert torch.allclose(logits, beta[:, None] * rbm.hidden_logits(state["v"]))
    normal_dist = torch.distributions.Normal
    normal = mix(normal_dist(torch.tensor(1.0), torch.tensor(0.5)), normal_dist(0.0, 1.0), torch.tensor(0.3))
    assert normal.scale.pow(-2).item() == pytest.approx(0.3 * 4 + 0.7)
    assert normal.loc.item() == pytest.approx(0.3 * 4 / 1.9)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Tempered(rbm, 1.5)
    with pytest.raises(NotImplementedError, match="cannot temper"):
        mix(torch.distributions.Poisson(torch.tensor(1.0)), None, torch.tensor(0.5))
