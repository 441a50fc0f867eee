"""Graph-coloured block Gibbs: exact joints (chi-square against enumeration), discovery,
user colourings, caching, NaN energies."""

import pytest
import torch
from lattice_models import (
    CurieWeiss,
    Ising,
    LateralBM,
    Potts,
    PottsCodes,
    SpinGlass,
    ThreeBody,
    joint_index,
    joint_probs,
)
from stattools import chi_square_pvalue

import ebm
from ebm.models.tempered import Tempered
from ebm.samplers.coloring import Graph, structure
from ebm.samplers.local import quadratic_plan, quadratic_sweep

# Tiny tensors: a second thread only adds synchronisation (and oversubscribes a busy machine).
pytestmark = pytest.mark.usefixtures("one_thread")

# Fixed seeds make these deterministic; a correct sampler fails at this level in 1 of 10^4
# seeds (checked over 20 seeds each), a wrong colouring or local difference gives p < 1e-30.
ALPHA = 1e-4


def exact_fit(model, n_chains=20_000, burn_in=100, seed=1, sampler=None):
    names = list(model.variables)
    chains = ebm.sample(model, sampler or ebm.Gibbs(), n_chains=n_chains, n_steps=1, burn_in=burn_in, seed=seed)
    probs = joint_probs(model, names)
    counts = torch.bincount(joint_index(model, chains.last, names), minlength=len(probs))
    return chi_square_pvalue(counts, probs)


@pytest.mark.parametrize(
    "make, affine, n_colors",
    [
        pytest.param(lambda: Ising(4, 0.4, field=0.1), True, 2, id="ising-4x4"),
        pytest.param(lambda: Potts(3, 3, 0.6, field=0.3), True, None, id="potts-q3-3x3"),
        pytest.param(lambda: SpinGlass(10, seed=3), True, None, id="spin-glass"),
        pytest.param(lambda: ThreeBody(3, J3=0.25, J2=0.2), True, None, id="three-body", marks=pytest.mark.slow),
        pytest.param(lambda: CurieWeiss(8, J=0.4), False, 8, id="curie-weiss", marks=pytest.mark.slow),
    ],
)
def test_joint_matches_enumeration(make, affine, n_colors):
    model = make()
    s = structure(model, next(iter(model.variables)), model.random_state(1))
    assert s.affine is affine
    if n_colors is not None:
        assert len(s.colors) == n_colors
    assert exact_fit(model) > ALPHA


@pytest.mark.slow
def test_boltzmann_machine_with_lateral_couplings():
    model = LateralBM(5, 3)
    assert len(structure(model, "h", model.random_state(1)).colors) == 1  # hidden units never interact
    assert len(structure(model, "v", model.random_state(1)).colors) == 5  # dense lateral couplings
    assert exact_fit(model) > ALPHA


def test_tempered_view_samples_each_chain_at_its_own_temperature():
    """A tempered view with one β per chain scales the quadratic sweep's logits per chain:
    the chains at β = 1 follow the model, those at β = 1/2 the model at half its couplings
    and field (two comparisons, each at ALPHA / 2)."""
    n = 20_000
    view = Tempered(Ising(4, 0.4, field=0.1), torch.tensor([1.0, 0.5]).repeat_interleave(n // 2))
    assert structure(view, "s", view.random_state(n)).rows is not None  # the quadratic path
    chains = ebm.sample(view, ebm.Gibbs(), n_chains=n, n_steps=1, burn_in=100, seed=1)
    for half, target in enumerate([Ising(4, 0.4, field=0.1), Ising(4, 0.2, field=0.05)]):
        rows = {"s": chains.last["s"][half * n // 2 : (half + 1) * n // 2]}
        probs = joint_probs(target, ["s"])
        counts = torch.bincount(joint_index(target, rows, ["s"]), minlength=len(probs))
        assert chi_square_pvalue(counts, probs) > ALPHA / 2


def test_non_differentiable_energy_is_discovered_on_discrete_states():
    model = PottsCodes(3, 3, 0.6, field=0.3)
    s = structure(model, "x", model.random_state(1))
    assert s.how == "discrete" and not s.affine and 3 <= len(s.colors) <= 4
    assert torch.equal(s.adjacency, structure(Potts(3, 3, 0.6), "x", model.random_state(1)).adjacency)


@pytest.mark.slow
def test_non_differentiable_energy_samples_exactly():
    assert exact_fit(PottsCodes(3, 3, 0.6, field=0.3), n_chains=10_000) > ALPHA


def test_chi_square_rejects_the_wrong_temperature():
    """The exactness test has power: draws at another β are rejected."""
    names = ["s"]
    chains = ebm.sample(Ising(4, 0.35, field=0.1), ebm.Gibbs(), n_chains=20_000, n_steps=1, burn_in=100, seed=1)
    model = Ising(4, 0.4, field=0.1)
    probs = joint_probs(model, names)
    counts = torch.bincount(joint_index(model, chains.last, names), minlength=len(probs))
    assert chi_square_pvalue(counts, probs) < ALPHA


def test_lattice_graph_and_checkerboard():
    model = Ising(8, 0.4)
    s = structure(model, "s", model.random_state(1))
    assert s.adjacency.sum(1).tolist() == [4] * 64
    i = torch.arange(8)
    checker = ((i[:, None] + i[None, :]) % 2).flatten()
    assert sorted(torch.unique(checker[c.cpu()]).numel() for c in s.colors) == [1, 1]


def test_user_coloring_and_graph():
    model = Ising(4, 0.4, field=0.1)
    i = torch.arange(4)
    checker = (i[:, None] + i[None, :]) % 2
    assert len(structure(model, "s", model.random_state(1), checker).colors) == 2
    sites = torch.arange(16).reshape(4, 4)
    edges = torch.cat([torch.stack([sites, sites.roll(1, d)], -1).reshape(-1, 2) for d in (0, 1)])
    assert len(structure(model, "s", model.random_state(1), Graph(edges)).colors) == 2
    assert exact_fit(model, sampler=ebm.Gibbs(coloring=checker)) > ALPHA


@pytest.mark.parametrize(
    "coloring",
    [torch.zeros(4, 4, dtype=torch.long), (torch.arange(4)[:, None] % 2).expand(4, 4).clone()],
    ids=["one-colour", "rows"],
)
def test_wrong_user_coloring_raises(coloring):
    model = Ising(4, 0.4)
    with pytest.raises(ValueError, match=r"colouring given to ebm\.Gibbs for block 's' is wrong: sites"):
        ebm.sample(model, ebm.Gibbs(coloring=coloring), n_chains=4, n_steps=2)


def test_wrong_user_coloring_raises_for_a_non_differentiable_energy():
    model = PottsCodes(3, 3, 0.6)
    with pytest.raises(ValueError, match="is wrong"):
        ebm.Gibbs(coloring=torch.zeros(3, 3, dtype=torch.long)).init(model, model.random_state(2))


def test_bad_coloring_input_is_named():
    model = Ising(4, 0.4)
    with pytest.raises(ValueError, match=r"integer colour labels of shape \(4, 4\)"):
        ebm.Gibbs(coloring=torch.zeros(16)).init(model, model.random_state(2))
    with pytest.raises(ValueError, match=r"flat site indices in \[0, 16\)"):
        ebm.Gibbs(coloring=Graph([[0, 16]])).init(model, model.random_state(2))


def test_cache_is_invalidated_when_parameters_change():
    model = LateralBM(4, 2, lateral=0.0)
    state = model.random_state(1)
    first = structure(model, "v", state)
    assert len(first.colors) == 1 and structure(model, "v", state) is first
    with torch.no_grad():
        model.L[0, 1] = model.L[1, 0] = 1.0  # a new coupling: sites 0 and 1 now interact
    assert len(structure(model, "v", state).colors) == 2
    model = Ising(4, 0.0)
    assert len(structure(model, "s", model.random_state(1)).colors) == 1
    model.beta = 0.4
    assert len(structure(model, "s", model.random_state(1)).colors) == 2


@pytest.mark.parametrize("fused", [False, True], ids=["adam", "fused-adam"])
def test_cache_is_invalidated_by_an_optimizer_step(fused):
    """Fused optimisers write parameters without bumping their version counters."""
    model = LateralBM(4, 2, lateral=0.0)
    state = model.random_state(1)
    assert len(structure(model, "v", state).colors) == 1
    optimizer = torch.optim.Adam([model.L], lr=0.5, fused=fused)
    model.L.grad = -torch.ones_like(model.L)  # every lateral coupling becomes 0.5
    optimizer.step()
    assert len(structure(model, "v", state).colors) == 4


class NaNCorner(Ising):
    def energy(self, state):
        e = super().energy(state)
        return torch.where(state["s"][:, 0, 0] > 0, torch.nan, e)


def test_nan_energy_warns_once_naming_block_and_sweep():
    with pytest.warns(RuntimeWarning, match=r"NaN energy differences in block 's'.*first at sweep 0") as caught:
        chains = ebm.sample(NaNCorner(4, 0.4), ebm.Gibbs(), n_chains=8, n_steps=5, seed=0)
    assert sum("NaN energy" in str(w.message) for w in caught) == 1
    assert int(chains.stats["nan_energy_s"][-1].sum()) > 0


@pytest.mark.parametrize(
    "make", [lambda: Ising(6, 0.4, field=0.1), lambda: Potts(3, 4, 0.6, field=0.3)], ids=["spin", "potts"]
)
def test_sweep_continues_from_its_own_copy_only_for_the_state_it_returned(make):
    """The sites-major copy a sweep leaves behind is used only by a sweep from the very
    tensor it returned, unwritten: a replay from an older state, a state written in place,
    or a copy all get the draws of a fresh start (same generator seed)."""
    model = make()
    name = next(iter(model.variables))
    domain = model.variables[name]
    s = structure(model, name, model.random_state(1))
    assert s.rows is not None  # the quadratic path

    def sweep(x, seed):
        return quadratic_sweep(model, domain, x, s, torch.Generator().manual_seed(seed))[0]

    x0 = model.random_state(16, generator=torch.Generator().manual_seed(0))[name]
    x1 = sweep(x0, 1)
    x2 = sweep(x1, 2)  # from the carried copy
    assert torch.equal(sweep(x1, 2), x2)  # a replay from x1: the copy holds x2 now
    assert torch.equal(sweep(x1.clone(), 2), x2)
    x3 = sweep(x2, 3)
    x3.copy_(x3.flip(0))  # written in place after it was returned
    assert torch.equal(sweep(x3, 4), sweep(x3.clone(), 4))
    assert sweep(x3, 5).is_contiguous() and torch.equal(x0.unique(), sweep(x0, 6).unique())


def test_quadratic_plan_looks_for_nan_only_when_logits_can_be_nan():
    model = SpinGlass(10, seed=3)
    assert quadratic_plan(model.variables["s"], structure(model, "s", model.random_state(1))).finite
    with torch.no_grad():
        model.J[0, 1] = model.J[1, 0] = 1e38  # logits of 2e38: above the bound, a quarter of float32's largest
    assert not quadratic_plan(model.variables["s"], structure(model, "s", model.random_state(1))).finite
