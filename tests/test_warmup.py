"""Warm-up sized to the burn-in (Stan's windowed adaptation), continuing a run with what
warm-up learned, adaptation frozen after burn-in, and the clear errors of the sampler
protocol (a sampler class for an instance, an energy without a gradient path)."""

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch
from pyro.infer.mcmc.adaptation import WarmupAdapter
from test_langevin import DiagonalGaussian, check_gaussian, single_thread, z_threshold

import ebm
from ebm.diagnostics import mcse
from ebm.samplers.adaptation import warmup_schedule
from ebm.training.negatives import PersistentChains

__all__ = ["single_thread"]

BURN_INS = [0, 1, 10, 49, 50, 51, 100, 101, 150, 200, 201, 400, 401]
STANDARD = DiagonalGaussian(torch.ones(10))
ILL_CONDITIONED = DiagonalGaussian(torch.logspace(-2, 2, 10))


def test_schedule_is_sized_to_the_burn_in():
    for n in range(700):
        ends = warmup_schedule(n, 25, 25, 50)
        if n < 100:
            assert ends == (), n
            continue
        sizes = torch.diff(torch.tensor((25, *ends))).tolist()
        assert ends[-1] == n - 50, n  # the last window ends where the terminal buffer starts
        assert sizes[0] >= 25, n
        assert all(b == 2 * a for a, b in itertools.pairwise(sizes[:-1])), n  # doubling
        assert len(sizes) == 1 or sizes[-1] >= 2 * sizes[-2], n  # stretched, never cut short


@pytest.mark.parametrize("n", [150, 151, 200, 201, 400, 401, 1000, 1234])
def test_schedule_matches_pyros_warmup_adapter(n):
    """Same windows as Pyro's (and Stan's) adapter with their buffers (75, 25, 50)."""
    pyro_adapter = WarmupAdapter(adapt_mass_matrix=True)
    pyro_adapter.configure(n, initial_step_size=1.0, mass_matrix_shape={("x",): (1,)})
    # Pyro lists inclusive 0-based windows: the buffers, then the mass windows between them
    pyro_ends = tuple(w.end + 1 for w in pyro_adapter.adaptation_schedule[1:-1])
    assert warmup_schedule(n, 75, 25, 50) == pyro_ends


def test_final_step_is_the_average_over_the_terminal_buffer():
    sampler = ebm.HMC(0.1, 5)
    n, term = 150, sampler.adapter.term_buffer
    with torch.enable_grad():
        s = sampler.init(ILL_CONDITIONED, ILL_CONDITIONED.random_state(20, torch.Generator().manual_seed(0)))
        s = sampler.start_adaptation(ILL_CONDITIONED, s, n)
        generator = torch.Generator().manual_seed(1)
        log_steps = []
        for _ in range(n):
            s, _ = sampler.step(ILL_CONDITIONED, s, generator, adapt=True)
            log_steps.append(s.step_size.log().item())
    final = sampler.end_adaptation(ILL_CONDITIONED, s).step_size.item()
    # dual averaging restarts after the last mass window: average its iterates (weights t^-0.75)
    average = 0.0
    for t, x in enumerate(log_steps[n - term :], start=1):
        average += t**-0.75 * (x - average)
    assert final == pytest.approx(torch.tensor(average).exp().item(), rel=1e-6)
    assert final != pytest.approx(torch.tensor(log_steps[-1]).exp().item(), rel=1e-3)


# Post-burn-in acceptance band. The sampling error of the mean acceptance is its MCSE
# (chains x steps), at a Bonferroni z over every checked case. On top of it, a systematic
# allowance: dual averaging run for a finite buffer is not at its fixed point, and its error
# has a known direction. Each restart centres it on 10x the step; the rejections that follow
# stay in its running mean of (target - acceptance) for many steps and hold the step below
# the fixed point (with per-chain statistics the noisy iterates add a Jensen bias the same
# way), so acceptance ends *above* the target, most after a step-size-only warm-up from a
# step 10x too small; Stan shows the same excess. Steps too large are the harmful failure
# (acceptance collapses, transitions diverge: the defect this guards against), so the
# allowance is small below the target and large above it. Measured over 20 seeds x 8 cases
# x 11 tuned burn-ins (1,760 runs, sampling error included): gaps from -0.074 to +0.26.
# ABOVE stays below 1 - 0.65, so HMC's band can still catch a step that ended far too small.
BELOW, ABOVE = 0.05, 0.30
SWEEP_CASES = [(k, p, t) for k in ("hmc", "mala") for p in (False, True) for t in ("standard", "ill")]
N_CHECKS = len(SWEEP_CASES) * sum(b >= 20 for b in BURN_INS)


def make_sampler(kind, per_chain):
    return ebm.HMC(0.1, 3, per_chain=per_chain) if kind == "hmc" else ebm.Langevin(0.01, per_chain=per_chain)


def check_sweep(kind, per_chain, target, burn_ins, seed=0):
    """Sample the target after each burn-in and check the post-burn-in acceptance; returns
    ``{burn_in: gap to the target}``."""
    model = STANDARD if target == "standard" else ILL_CONDITIONED
    gaps = {}
    for burn_in in burn_ins:
        sampler = make_sampler(kind, per_chain)
        chains = ebm.sample(model, sampler, n_chains=32, n_steps=10, burn_in=burn_in, seed=seed + burn_in)
        s = chains.sampler_state
        assert chains.n_divergent == 0, burn_in
        if burn_in < sampler.adapter.min_steps:  # too short to tune: the settings stay
            assert (s.step_size == sampler.step_size).all() and (s.inv_mass == 1).all(), burn_in
            continue
        if burn_in >= 100 and model is ILL_CONDITIONED:
            assert (s.inv_mass != 1).all(), burn_in  # the mass was estimated (exactly 1 on STANDARD)
        accept = chains.stats["accept_prob"].double()
        gaps[burn_in] = gap = accept.mean().item() - sampler.adapter.target_accept
        z = z_threshold(N_CHECKS) * mcse(accept).item()
        assert -BELOW - z < gap < ABOVE + z, (burn_in, gap, z)
    return gaps


@pytest.mark.parametrize(("kind", "per_chain", "target"), SWEEP_CASES)
def test_burn_in_sweep_reaches_the_target_acceptance(kind, per_chain, target):
    """The burn-ins next to the schedule's edges (window ends at 50, 100, 200, 400 before,
    the threshold of the mass windows at 100, no tuning below 20)."""
    check_sweep(kind, per_chain, target, [0, 1, 10, 50, 51, 100, 101, 201])


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "per_chain", "target"), SWEEP_CASES)
def test_full_burn_in_sweep_reaches_the_target_acceptance(kind, per_chain, target):
    check_sweep(kind, per_chain, target, BURN_INS)


def test_adaptation_stops_after_burn_in():
    model, sampler = ILL_CONDITIONED, ebm.HMC(0.1, 3, per_chain=True)
    tuned = ebm.sample(model, sampler, n_chains=16, n_steps=0, burn_in=150, seed=5).sampler_state
    chains = ebm.sample(model, sampler, n_chains=16, n_steps=100, burn_in=150, seed=5)
    assert (chains.stats["step_size"] == tuned.step_size.reshape(1, -1)).all()
    assert torch.equal(chains.sampler_state.step_size, tuned.step_size)
    assert torch.equal(chains.sampler_state.inv_mass, tuned.inv_mass)
    assert chains.sampler_state.adaptation is None


class Spy(ebm.HMC):
    """HMC that records the burn-in lengths it is told."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.told = []

    def start_adaptation(self, model, sampler_state, n_steps):
        self.told.append(n_steps)
        return super().start_adaptation(model, sampler_state, n_steps)


def test_every_caller_tells_the_sampler_the_burn_in():
    spy = Spy(0.1, 2)
    ebm.sample(STANDARD, spy, n_chains=4, n_steps=1, burn_in=30)
    ebm.sample(STANDARD, ebm.ParallelTempering(spy, [1.0, 0.5]), n_chains=4, n_steps=1, burn_in=31)
    ebm.sample(STANDARD, ebm.Composite({"x": spy}), n_chains=4, n_steps=1, burn_in=32)
    pcd = PersistentChains(k=1, n_chains=4, burn_in=33)
    pcd.setup(STANDARD, spy, {}, torch.Generator().manual_seed(0))
    assert spy.told == [30, 31, 32, 33]
    assert pcd.chains is not None


def test_pcd_burn_in_tunes_the_persistent_chains():
    pcd = PersistentChains(k=1, n_chains=32, burn_in=150)
    sampler = ebm.HMC(0.1, 3)
    pcd.setup(ILL_CONDITIONED, sampler, {}, torch.Generator().manual_seed(0))
    negatives = pcd(ILL_CONDITIONED, sampler, {}, torch.Generator().manual_seed(1))
    assert negatives["x"].shape == (32, 10)
    s = pcd._sstate
    assert s.adaptation is None and s.step_size.item() != 0.1
    ratio = s.inv_mass.squeeze(0) / ILL_CONDITIONED.variance
    assert ((ratio - 1).abs() < 0.1).all(), ratio


# Continuing a run.


@pytest.mark.parametrize("per_chain", [False, True], ids=["shared", "per-chain"])
def test_continuing_is_the_same_run(per_chain):
    """Continuing with the same random stream gives exactly the draws of one longer run."""
    sampler = ebm.HMC(0.1, 3, per_chain=per_chain)
    whole = ebm.sample(STANDARD, sampler, n_chains=8, n_steps=30, burn_in=120, generator=torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    first = ebm.sample(STANDARD, sampler, n_chains=8, n_steps=10, burn_in=120, generator=generator)
    rest = ebm.sample(STANDARD, sampler, n_steps=20, init=first, generator=generator)
    assert torch.equal(rest["x"], whole["x"][10:])
    assert torch.equal(rest.sampler_state.step_size, first.sampler_state.step_size)
    assert torch.equal(rest.sampler_state.inv_mass, first.sampler_state.inv_mass)
    assert (rest.stats["step_size"] == first.sampler_state.step_size.reshape(1, -1)).all()


def test_continuation_samples_the_target_with_the_tuned_kernel():
    model = DiagonalGaussian(torch.logspace(-2, 2, 4), means=torch.linspace(-1, 1, 4))
    first = ebm.sample(model, ebm.HMC(0.1, 5), n_chains=100, n_steps=10, burn_in=300, seed=0)
    rest = ebm.sample(model, ebm.HMC(0.1, 5), n_steps=200, init=first, seed=1)
    assert rest.n_divergent == 0
    check_gaussian(rest, model)
    assert 0.5 < rest.stats["accept_prob"].mean().item() < 0.95  # the untuned step 0.1 accepts ~all


def test_continuing_with_burn_in_retunes_from_the_carried_values():
    first = ebm.sample(ILL_CONDITIONED, ebm.HMC(0.1, 3), n_chains=16, n_steps=1, burn_in=150, seed=0)
    mass_only = ebm.HMC(0.1, 3, adapt_step_size=False)
    again = ebm.sample(ILL_CONDITIONED, mass_only, n_steps=1, burn_in=150, init=first, seed=1)
    assert torch.equal(again.sampler_state.step_size, first.sampler_state.step_size)
    assert not torch.equal(again.sampler_state.inv_mass, first.sampler_state.inv_mass)


def test_continuing_tempering_keeps_its_ladder():
    sampler = ebm.ParallelTempering(ebm.Langevin(0.05), 4, beta_min=0.05, adapt=True)
    first = ebm.sample(STANDARD, sampler, n_chains=8, n_steps=5, burn_in=60, seed=0)
    betas = first.sampler_state.betas
    assert not torch.allclose(betas.double(), sampler.betas)
    rest = ebm.sample(STANDARD, sampler, n_steps=5, init=first, seed=1)
    assert torch.equal(rest.sampler_state.betas, betas)
    assert torch.equal(rest.sampler_state.inner.step_size, first.sampler_state.inner.step_size)


def test_continuing_checks_what_it_is_given():
    first = ebm.sample(STANDARD, ebm.HMC(0.1, 2), n_chains=4, n_steps=2, seed=0)
    with pytest.raises(TypeError, match="drawn by HMC; continue them with a HMC"):
        ebm.sample(STANDARD, ebm.Gibbs(), n_steps=2, init=first)
    with pytest.raises(ValueError, match="per chain step size"):
        ebm.sample(STANDARD, ebm.HMC(0.1, 2, per_chain=True), n_steps=2, init=first)
    with pytest.raises(ValueError, match="n_chains=5 but the chains to continue have 4"):
        ebm.sample(STANDARD, ebm.HMC(0.1, 2), n_chains=5, n_steps=2, init=first)
    with pytest.raises(ValueError, match="keep their observed blocks"):
        ebm.sample(STANDARD, ebm.HMC(0.1, 2), n_steps=2, init=first, observed={"x": torch.zeros(10)})


# Clear errors.


@pytest.mark.parametrize("cls", [ebm.Gibbs, ebm.HMC])
def test_a_sampler_class_instead_of_an_instance_is_named(cls):
    with pytest.raises(TypeError, match=f"got the class {cls.__name__}: write {cls.__name__}\\(\\)"):
        ebm.sample(STANDARD, cls, n_chains=2, n_steps=1)
    with pytest.raises(TypeError, match="needs an ebm sampler"):
        ebm.sample(STANDARD, "hmc", n_chains=2, n_steps=1)


class Detached(ebm.EnergyModel):
    def __init__(self, how):
        super().__init__(x=ebm.Real(2))
        self.how = how
        self.scale = torch.nn.Parameter(torch.ones(()))

    def energy(self, state):
        x = state["x"]
        if self.how == "detach":
            return 0.5 * x.detach().square().sum(-1)
        if self.how == "numpy":
            return torch.from_numpy(0.5 * np.square(x.detach().numpy()).sum(-1))
        return self.scale * torch.ones(x.shape[0])  # "unused": no dependence on x at all


@pytest.mark.parametrize("how", ["detach", "numpy", "unused"])
@pytest.mark.parametrize("sampler", [ebm.HMC(0.1, 2), ebm.Langevin(0.1)], ids=["hmc", "mala"])
def test_an_energy_without_a_gradient_path_is_named(how, sampler):
    message = "does not depend on block\\(s\\) 'x'" if how == "unused" else "returned a tensor without autograd history"
    with pytest.raises(ValueError, match=f"Detached.energy {message}.*no .detach\\(\\)"):
        ebm.sample(Detached(how), sampler, n_chains=3, n_steps=1)


def test_continuing_refuses_a_sampler_state_that_holds_only_some_of_the_chains():
    # a run split across ranks gathers draws from every rank, but each rank keeps its own sampler state
    model = ebm.RBM(6, 3, seed=0)
    chains = ebm.sample(model, ebm.Gibbs(), n_chains=8, n_steps=10, seed=0)
    chains.sampler_state = replace(chains.sampler_state, state={k: v[:4] for k, v in chains.sampler_state.state.items()})
    with pytest.raises(ValueError, match="holds 4 of these 8 chains"):
        ebm.sample(model, ebm.Gibbs(), n_steps=5, init=chains)
