"""Many-chain warm-up: stuck chains restarted during warm-up only, a dense mass estimated
across chains, ChEES trajectory lengths. Statistical checks are z-scores against the MCSE
with a Bonferroni threshold (``check_gaussian``)."""

import math
import warnings

import pytest
import torch
from test_langevin import DiagonalGaussian, check_gaussian, single_thread

import ebm
from ebm.samplers.adaptation import Adapter, CrossMoments, geometric_mean_inverse
from ebm.samplers.rescue import stuck_chains
from ebm.samplers.trajectory import halton, leapfrog_count
from ebm.summary import E_BFMI_LOW, E_BFMI_MIN

__all__ = ["single_thread"]


class Gaussian(ebm.EnergyModel):
    """``E(x) = ½ xᵀ C⁻¹ x`` over one ``Real(d)`` block."""

    def __init__(self, covariance):
        super().__init__(x=ebm.Real(covariance.shape[0]))
        self.register_buffer("covariance", covariance)
        self.register_buffer("precision", torch.linalg.inv(covariance))
        self.register_buffer("mean", torch.zeros(covariance.shape[0]))
        self.register_buffer("variance", covariance.diagonal().clone())

    def energy(self, state):
        x = state["x"]
        return 0.5 * ((x @ self.precision) * x).sum(-1)


def rotated(correlation=0.99, scales=(1.0, 10.0)):
    """A 2-D Gaussian with sds ``scales`` and correlation ``correlation`` (condition ~200)."""
    s = torch.tensor(scales)
    corr = torch.tensor([[1.0, correlation], [correlation, 1.0]])
    return Gaussian(corr * s.outer(s))


# Stuck chains.


class Spiked(ebm.EnergyModel):
    """A standard 2-D Gaussian plus, at ``SPIKE``, a spike of sd 0.01 holding 1e-6 of the mass
    (a bias of ~2e-5 in the mean, far below the tests' MCSE). A chain that starts in the
    spike rejects every step sized for the bulk (it would land where the energy is ~400
    nats): it never leaves by itself."""

    SPIKE, SD, WEIGHT = 20.0, 0.01, 1e-6

    def __init__(self):
        super().__init__(x=ebm.Real(2))
        self.register_buffer("mean", torch.zeros(2))
        self.register_buffer("variance", torch.ones(2))

    def energy(self, state):
        x = state["x"]
        bulk = -0.5 * x.square().sum(-1)
        spike = math.log(self.WEIGHT) - 0.5 * ((x - self.SPIKE) / self.SD).square().sum(-1) - 2 * math.log(self.SD)
        return -torch.logaddexp(bulk, spike)


SPIKED = Spiked()
N_CHAINS, EVERY = 64, 8


def spike_start():
    """Every 8th chain starts in the spike."""
    x = torch.randn(N_CHAINS, 2, generator=torch.Generator().manual_seed(0))
    x[::EVERY] = Spiked.SPIKE
    return {"x": x}


STUCK_CASES = {"hmc": lambda: ebm.HMC(0.5, 5), "hmc-tuned-length": lambda: ebm.HMC(0.5), "mala": lambda: ebm.Langevin(0.5)}


def check_rescue(kind, seed=0, rescue=True):
    sampler = STUCK_CASES[kind]()
    sampler.adapter.rescue = rescue
    chains = ebm.sample(SPIKED, sampler, n_steps=200, burn_in=150, init=spike_start(), seed=seed)
    # a chain left in the spike inflates the MCSE (between-chain spread) enough to pass the
    # moment check: check that none is there (a 2-D standard normal beyond radius 12: e^-72)
    assert (chains["x"].norm(dim=-1) < 12).all()
    check_gaussian(chains, SPIKED)
    rescued = chains.sampler_state.rescued
    assert rescued[::EVERY].gt(0).all(), rescued


@pytest.mark.parametrize("kind", list(STUCK_CASES))
def test_stuck_chains_are_restarted_during_warm_up(kind):
    check_rescue(kind)


def test_no_restart_after_warm_up():
    chains = ebm.sample(SPIKED, ebm.HMC(0.5, 5), n_steps=30, burn_in=0, init=spike_start(), seed=0)
    assert chains.sampler_state.rescued is None
    assert ((chains["x"][:, ::EVERY] - Spiked.SPIKE).abs() < 0.1).all()  # stuck, and left alone


def test_stuck_rule_is_relative_to_the_median():
    accept = torch.tensor([0.0, 0.05, 0.3, 0.6, 0.7, 0.8])
    assert stuck_chains(accept).tolist() == [True, True, False, False, False, False]
    assert not stuck_chains(torch.full((6,), 0.02)).any()  # all slow: the step, not the chains


# Dense mass.


def test_geometric_mean_solves_the_riccati_equation():
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(5, 5, generator=g, dtype=torch.float64) for _ in range(2))
    a, b = a @ a.T + torch.eye(5, dtype=torch.float64), b @ b.T + torch.eye(5, dtype=torch.float64)
    sigma = geometric_mean_inverse(a, b)
    torch.testing.assert_close(sigma @ b @ sigma, a)
    assert (torch.linalg.eigvalsh(sigma) > 0).all()


def test_cross_moments_match_the_pooled_covariance():
    x = torch.randn(10, 7, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 5
    moments = CrossMoments()
    for batch in x:
        moments.update(batch, torch.ones(7))
    n = 70
    expected = torch.cov(x.reshape(n, 3).T)
    torch.testing.assert_close(moments.covariance(), (n / (n + 5)) * expected + 1e-3 * 5 / (n + 5) * torch.eye(3))


def preconditioned_condition(sampler_state, covariance):
    """Condition number of the target's covariance in the sampler's whitened coordinates."""
    inv_mass = sampler_state.inv_mass[0]
    factor = torch.linalg.cholesky(inv_mass if inv_mass.dim() == 2 else torch.diag(inv_mass))
    whitened = torch.linalg.solve_triangular(
        factor, torch.linalg.solve_triangular(factor, covariance, upper=False).T, upper=False
    )
    values = torch.linalg.eigvalsh(whitened.double())
    return (values.max() / values.min()).item()


def check_dense(kind, seed=0, dense=True):
    model = rotated()
    sampler = ebm.HMC(0.1, 5, dense_mass=dense) if kind == "hmc" else ebm.Langevin(0.01, dense_mass=dense)
    chains = ebm.sample(model, sampler, n_chains=64, n_steps=200, burn_in=150, seed=seed)
    # the gradient estimator is exact for a Gaussian up to sampling noise: ~200 -> ~1
    assert preconditioned_condition(chains.sampler_state, model.covariance) < 1.3
    check_gaussian(chains, model)


@pytest.mark.parametrize("kind", ["hmc", "mala"])
def test_dense_mass_recovers_a_rotated_covariance(kind):
    check_dense(kind)


def test_default_hmc_is_dense_for_small_dimensions():
    chains = ebm.sample(rotated(), ebm.HMC(), n_chains=8, n_steps=1, burn_in=0)
    assert chains.sampler_state.inv_mass.shape == (1, 2, 2)
    big = DiagonalGaussian(torch.ones(200))
    assert ebm.sample(big, ebm.HMC(), n_chains=8, n_steps=1).sampler_state.inv_mass.shape == (1, 200)
    assert ebm.sample(rotated(), ebm.HMC(0.1, 3), n_chains=8, n_steps=1).sampler_state.inv_mass.shape == (1, 2)


def test_dense_and_diagonal_states_do_not_mix():
    first = ebm.sample(SPIKED, ebm.HMC(0.1, 2), n_chains=4, n_steps=2, seed=0)
    with pytest.raises(ValueError, match="uses a dense mass but the carried state has the other kind"):
        ebm.sample(SPIKED, ebm.HMC(0.1, 2, dense_mass=True), n_steps=2, init=first)
    with pytest.raises(ValueError, match="per_chain=False"):
        ebm.HMC(0.1, 2, dense_mass=True, per_chain=True)


# Trajectory length (ChEES).


def test_jitter_sequence_and_leapfrog_counts():
    assert [halton(t) for t in range(4)] == [0.5, 0.25, 0.75, 0.125]
    counts = [leapfrog_count(t, 20.0, 256) for t in range(64)]
    assert min(counts) >= 1 and max(counts) == 20
    # a fixed Halton sequence, no randomness: u_t averages about 1/2, E[ceil(20 u)] = 10.5
    assert sum(counts) == 661
    assert leapfrog_count(0, 1e6, 256) == 256


def test_trajectory_length_grows_from_a_short_start():
    """From T = 10 x 0.01 on a standard Gaussian, ChEES lengthens the trajectory past its
    first optimum (T ~ 2.3 for jittered lengths; it then wanders, see
    ``ebm.samplers.trajectory``), and the draws stay exact."""
    check_trajectory()


def check_trajectory(seed=0):
    model = DiagonalGaussian(torch.ones(10))
    chains = ebm.sample(model, ebm.HMC(0.01), n_chains=64, n_steps=200, burn_in=300, seed=seed)
    length = chains.sampler_state.trajectory_length.item()
    assert length > 1.5, length
    check_gaussian(chains, model)
    assert (chains.stats["n_leapfrog"][:, 0] > 1).any()


def test_tuned_length_needs_shared_tuning():
    with pytest.raises(ValueError, match="give n_leapfrog with per_chain=True"):
        ebm.HMC(per_chain=True)


# Unadjusted Langevin that blows up.


def test_ula_blow_up_is_reported_once():
    model = DiagonalGaussian(torch.ones(3))
    with pytest.warns(RuntimeWarning, match="unstable.*Lower the step size") as caught:
        ebm.sample(model, ebm.Langevin(2.5, metropolis=False), n_chains=8, n_steps=50, seed=0)
    assert sum("unstable" in str(w.message) for w in caught) == 1


def test_stable_ula_gives_no_blow_up_warning():
    model = DiagonalGaussian(torch.ones(3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chains = ebm.sample(model, ebm.Langevin(0.05, metropolis=False), n_chains=8, n_steps=50, seed=0)
    assert not any("unstable" in str(w.message) for w in caught)
    assert not chains.stats["unstable"].any()


def test_summary_warns_about_divergences():
    model = DiagonalGaussian(torch.logspace(-2, 0, 3))
    with pytest.warns(RuntimeWarning, match="divergent transition"):
        chains = ebm.sample(model, ebm.HMC(1.0, 10, adapt_step_size=False), n_chains=8, n_steps=20, burn_in=30, seed=0)
    assert chains.n_divergent > 0
    assert "divergent transitions: the sampler could not follow" in str(chains.summary())


# Log-uniform step jitter (HMC(step_range=k)).

RANGE_MODEL = DiagonalGaussian(torch.tensor([0.25, 1.0, 4.0]))


def check_step_range(seed=0):
    """A fixed kernel (no adaptation) whose step is drawn per chain from [ε/30, ε] at every
    transition: exact, so the moments match. ε = 2 is unstable for the narrowest coordinate
    (sd 0.5): the top third of the range diverges, as a large step does in a funnel's neck,
    and the chains move on the small steps they draw. A draw that depends on the state (the
    smallest step beyond |x|² = 2) fails here: z 5.8-7.4 against a threshold of 3.8 over 5
    seeds; 20 seeds of this check: max z 2.7."""
    sampler = ebm.HMC(2.0, 4, step_range=30.0, adapt_step_size=False, adapt_mass=False)
    init = {"x": torch.randn(64, 3, generator=torch.Generator().manual_seed(seed)) * RANGE_MODEL.variance.sqrt()}
    with pytest.warns(RuntimeWarning, match="divergent"):
        chains = ebm.sample(RANGE_MODEL, sampler, n_chains=64, n_steps=300, seed=seed, init=init)
    check_gaussian(chains, RANGE_MODEL)
    assert (chains.stats["step_size"] == 2.0).all()  # the nominal step is what is recorded


def test_log_uniform_step_jitter_keeps_the_target():
    check_step_range()


def test_floored_harmonic_mean_is_not_captured_by_one_chain():
    accept = torch.full((1024,), 0.8)
    accept[0] = 0.0
    plain, floored = Adapter(0.65, statistic="harmonic"), Adapter(0.65, statistic="harmonic")
    floored.accept_floor = 0.1
    state = floored.start(torch.ones(1, 1), 100, 1024)
    assert plain._shared_statistic(state, accept) == 0.0  # one stuck chain drags ε down for all
    assert floored._shared_statistic(state, accept) > 0.78
    assert ebm.HMC(step_range=100.0).adapter.accept_floor == 0.1 and ebm.HMC().adapter.accept_floor == 0.0
    with pytest.raises(ValueError, match="step_range must be a finite number >= 1"):
        ebm.HMC(step_range=0.5)


def test_momentum_refreshes_keep_the_target():
    """Four HMC transitions of 3 leapfrog steps per step, each with its own momentum: exact.
    Reusing one momentum draw for the four (the position then depends on the momentum it
    starts from) fails with z ~ 64; 20 seeds of this check: max z 3.1 (threshold 3.8)."""
    sampler = ebm.HMC(0.5, 12, refreshes=4, adapt_step_size=False, adapt_mass=False)
    momenta, normal = [], sampler.normal
    sampler.normal = lambda *args: momenta.append(1) or normal(*args)  # counts the momentum draws
    init = {"x": torch.randn(64, 3, generator=torch.Generator().manual_seed(0)) * RANGE_MODEL.variance.sqrt()}
    chains = ebm.sample(RANGE_MODEL, sampler, n_chains=64, n_steps=300, seed=0, init=init)
    check_gaussian(chains, RANGE_MODEL)
    assert (chains.stats["n_leapfrog"] == 12).all() and len(momenta) == 4 * 300
    with pytest.raises(ValueError, match="refreshes must be a positive integer"):
        ebm.HMC(refreshes=0)


# E-BFMI: the energy, not the trajectory, limits mixing in a funnel.

SCHOOLS_Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SCHOOLS_SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


class EightSchools(ebm.EnergyModel):
    """Rubin's eight schools (``mu ~ N(0, 5²)``, ``tau ~ HalfCauchy(5)``, ``theta_j ~ N(mu, tau²)``,
    ``y_j ~ N(theta_j, sigma_j²)``) in ``(mu, log tau, theta)`` (centred: a funnel) or in
    ``(mu, log tau, eta)`` with ``theta = mu + tau eta`` (non-centred), as in
    ``benchmarks/posteriors.py``."""

    def __init__(self, centred):
        super().__init__(x=ebm.Real(10))
        self.centred = centred

    def energy(self, state):
        x = state["x"]
        mu, log_tau, rest = x[:, 0], x[:, 1], x[:, 2:]
        tau = log_tau.exp()
        theta = rest if self.centred else mu.unsqueeze(-1) + tau.unsqueeze(-1) * rest
        likelihood = 0.5 * ((SCHOOLS_Y - theta) / SCHOOLS_SIGMA).square().sum(-1)
        if self.centred:
            prior = 0.5 * ((theta - mu.unsqueeze(-1)) / tau.unsqueeze(-1)).square().sum(-1) + 8 * log_tau
        else:
            prior = 0.5 * rest.square().sum(-1)
        return likelihood + prior + mu.square() / 50 + torch.log1p(tau.square() / 25) - log_tau


def check_e_bfmi(seed=0):
    """64 chains, 100 + 100 steps, trajectories capped at 32 leapfrog steps: the centred
    schools' chains have an E-BFMI of 0.03-2.3 (median 0.26-0.59 by seed), the non-centred
    0.52-1.7. 20 seeds x 1 and 2 threads: the centred run's worst chain at most 0.16, the
    non-centred's at least 0.52, against the threshold 0.3 (with 32 chains and 150 + 150
    steps the centred worst reached 0.29)."""
    found = {}
    for centred in (True, False):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            chains = ebm.sample(
                EightSchools(centred), ebm.HMC(max_leapfrog=32), n_chains=64, n_steps=100, burn_in=100, seed=seed
            )
        summary = chains.summary()
        warned = any("E-BFMI < 0.3" in str(w.message) and "non-centred" in str(w.message) for w in caught)
        found[centred] = (summary.sampler[E_BFMI_LOW], summary.sampler[E_BFMI_MIN], warned)
    assert found[True][0] >= 1 and found[True][2], found
    assert found[False][0] == 0 and not found[False][2], found
    return found


def test_low_e_bfmi_flags_the_centred_eight_schools_only():
    check_e_bfmi()


# Tempered trajectories (HMC(tempering=τ)).


def check_tempering(seed=0):
    """Trajectories of 12 leapfrog steps, the kinetic energy scaled up 4x by their middle and back
    down: exact, so the moments match. Without the cooling in the second half (a map that does
    not keep volume) the check fails with z 6.5-6.8 over 3 seeds; 20 seeds x 1 and 2 threads: max z 2.4
    (threshold 3.8)."""
    sampler = ebm.HMC(0.5, 12, tempering=4.0, adapt_step_size=False, adapt_mass=False)
    init = {"x": torch.randn(64, 3, generator=torch.Generator().manual_seed(seed)) * RANGE_MODEL.variance.sqrt()}
    chains = ebm.sample(RANGE_MODEL, sampler, n_chains=64, n_steps=300, seed=seed, init=init)
    check_gaussian(chains, RANGE_MODEL)
    accept = chains.stats["accept_prob"].mean().item()
    # the tempering is on: H is not conserved along the trajectory (measured 0.70 against 0.93)
    plain = ebm.HMC(0.5, 12, adapt_step_size=False, adapt_mass=False)
    untempered = ebm.sample(RANGE_MODEL, plain, n_chains=64, n_steps=300, seed=seed, init=init)
    assert accept < untempered.stats["accept_prob"].mean().item() - 0.1, accept


def test_tempered_trajectories_keep_the_target():
    check_tempering()
    with pytest.raises(ValueError, match="tempering must be a finite number >= 1"):
        ebm.HMC(tempering=0.5)
