"""MALA and ULA: Monte-Carlo-standard-error tests on Gaussian targets, ULA's step-size bias,
divergence handling. Tolerances are z-scores against the MCSE (from the ESS), with a
Bonferroni threshold over the tested moments."""

import warnings

import pytest
import torch

import ebm
from ebm.diagnostics import mcse


@pytest.fixture(autouse=True)
def single_thread():
    """Small per-step tensors run faster on one thread, and far faster on a loaded machine
    where a second thread waits at every parallel region; the thread count is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class DiagonalGaussian(ebm.EnergyModel):
    """``E(x) = Σ (x - μ)² / 2σ²`` over one ``Real(d)`` block."""

    def __init__(self, variances, means=None):
        super().__init__(x=ebm.Real(len(variances)))
        variances = torch.as_tensor(variances, dtype=torch.get_default_dtype())
        self.register_buffer("variance", variances)
        self.register_buffer("mean", torch.zeros_like(variances) if means is None else torch.as_tensor(means))

    def energy(self, state):
        return 0.5 * ((state["x"] - self.mean).square() / self.variance).sum(-1)


def z_threshold(n_tests: int, alpha: float = 1e-3) -> float:
    """Two-sided Bonferroni z threshold: all ``n_tests`` pass with probability ≥ 1 − alpha."""
    return torch.special.ndtri(torch.tensor(1 - alpha / (2 * n_tests), dtype=torch.float64)).item()


def moment_z_scores(draws: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """|estimate − truth| / MCSE of the mean and of E[(x − μ)²] per coordinate; draws ``(n_draws, n_chains, d)``."""
    draws = draws.double()
    mean, variance = mean.double(), variance.double()
    z_mean = (draws.mean((0, 1)) - mean).abs() / mcse(draws)
    square = (draws - mean).square()
    z_var = (square.mean((0, 1)) - variance).abs() / mcse(square)
    return torch.cat([z_mean, z_var])


def check_gaussian(chains, model):
    z = moment_z_scores(chains["x"], model.mean, model.variance)
    assert z.max() < z_threshold(z.numel()), z


@pytest.mark.parametrize("variances", [torch.ones(4), torch.logspace(-2, 2, 4)], ids=["standard", "ill-conditioned"])
def test_mala_matches_gaussian_moments(variances):
    model = DiagonalGaussian(variances, means=torch.linspace(-1, 1, 4))
    chains = ebm.sample(model, ebm.Langevin(0.05), n_chains=200, n_steps=400, burn_in=400, seed=1)
    check_gaussian(chains, model)
    accept = chains.stats["accept_prob"].mean().item()
    assert 0.45 < accept < 0.7, accept
    assert chains.n_divergent == 0


def test_mala_per_chain_adaptation_keeps_one_step_size_per_chain():
    model = DiagonalGaussian(torch.logspace(-1, 1, 3))
    sampler = ebm.Langevin(0.1, per_chain=True)
    chains = ebm.sample(model, sampler, n_chains=50, n_steps=400, burn_in=400, seed=2)
    step = chains.sampler_state.step_size
    assert step.shape == (50, 1) and chains.sampler_state.inv_mass.shape == (50, 3)
    assert step.std() > 0
    check_gaussian(chains, model)


def test_ula_bias_shrinks_with_step_size():
    # For E = x²/2, ULA is the AR(1) x' = (1 − τ) x + sqrt(2τ) ξ with stationary variance
    # 1 / (1 − τ/2): the bias is known exactly, so both runs must match their own theory.
    model = DiagonalGaussian(torch.ones(1))
    biases = []
    for tau in (0.6, 0.1):
        sampler = ebm.Langevin(tau, metropolis=False)
        chains = ebm.sample(model, sampler, n_chains=500, n_steps=300, burn_in=100, seed=3)
        square = chains["x"].double().square()
        estimate = square.mean()
        theory = 1 / (1 - tau / 2)
        assert (estimate - theory).abs() / mcse(square).squeeze() < z_threshold(2)
        assert chains.stats["accepted"].all()  # unadjusted: every finite proposal is taken
        biases.append(estimate - 1)
    assert biases[0] > biases[1] > -0.02


def test_noisy_gradient_descent_samples_a_sharper_density():
    # With noise scale s the unadjusted Gaussian chain has variance s² / (1 − τ/2).
    model = DiagonalGaussian(torch.ones(2))
    sampler = ebm.Langevin(0.1, metropolis=False, noise_scale=0.5)
    chains = ebm.sample(model, sampler, n_chains=300, n_steps=300, burn_in=100, seed=4)
    square = chains["x"].double().square()
    theory = 0.25 / (1 - 0.05)
    assert ((square.mean((0, 1)) - theory).abs() / mcse(square) < z_threshold(2)).all()


def test_mala_with_scaled_noise_stays_exact():
    model = DiagonalGaussian(torch.ones(3))
    chains = ebm.sample(model, ebm.Langevin(0.2, noise_scale=0.7), n_chains=200, n_steps=400, burn_in=200, seed=5)
    check_gaussian(chains, model)


class Cliff(ebm.EnergyModel):
    """A Gaussian whose energy is NaN for x₀ > 1.5 (a model that breaks off its support)."""

    def __init__(self):
        super().__init__(x=ebm.Real(2))

    def energy(self, state):
        x = state["x"]
        quadratic = 0.5 * x.square().sum(-1)
        return torch.where(x[:, 0] > 1.5, torch.full_like(quadratic, float("nan")), quadratic)


@pytest.mark.parametrize("sampler", [ebm.Langevin(1.0, adapt_step_size=False), ebm.HMC(0.8, 3, adapt_step_size=False)])
def test_nan_energies_are_rejected_not_propagated(sampler):
    init = {"x": torch.zeros(64, 2)}
    with pytest.warns(RuntimeWarning, match=r"divergent.*chain\(s\) \["):
        chains = ebm.sample(Cliff(), sampler, n_steps=200, init=init, seed=6)
    assert torch.isfinite(chains["x"]).all() and torch.isfinite(chains.energy).all()
    assert (chains["x"][..., 0] <= 1.5).all()
    assert chains.n_divergent > 0
    assert chains.n_divergent == int(chains.stats["divergent"].sum())
    divergent = chains.stats["divergent"]
    assert not chains.stats["accepted"][divergent].any()
    assert (chains.stats["accept_prob"][divergent] == 0).all()


def test_no_divergence_warning_without_divergences():
    # so short a run is warned about for its R-hat and ESS, but not for divergences
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ebm.sample(DiagonalGaussian(torch.ones(2)), ebm.Langevin(0.1), n_chains=8, n_steps=20, burn_in=20)
    assert not [w for w in caught if "divergent" in str(w.message)]


def test_langevin_records_per_chain_info():
    chains = ebm.sample(DiagonalGaussian(torch.ones(2)), ebm.Langevin(0.1), n_chains=7, n_steps=10)
    for key in ("accept_prob", "accepted", "energy_error", "divergent", "step_size"):
        assert chains.stats[key].shape == (10, 7), key
    model = DiagonalGaussian(torch.ones(2))
    torch.testing.assert_close(chains.energy, model.energy({"x": chains["x"].flatten(0, 1)}).reshape(10, 7))


def test_bad_input_errors():
    with pytest.raises(ValueError, match="step_size"):
        ebm.Langevin(-1.0)
    with pytest.raises(ValueError, match="noise_scale"):
        ebm.Langevin(0.1, noise_scale=0)
    with pytest.raises(ValueError, match="mass_estimator"):
        ebm.Langevin(0.1, mass_estimator="dense")
    with pytest.raises(TypeError, match="Real blocks only"):
        ebm.sample(ebm.RBM(3, 2), ebm.Langevin(0.1), n_chains=2, n_steps=1)
    with pytest.raises(ValueError, match="unknown block"):
        ebm.sample(DiagonalGaussian(torch.ones(2)), ebm.Langevin(0.1, blocks=["y"]), n_chains=2, n_steps=1)
    with pytest.raises(ValueError, match="initial energy"):
        ebm.sample(Cliff(), ebm.Langevin(0.1), init={"x": torch.full((3, 2), 2.0)}, n_steps=1)
