"""The RBMs' fused Gibbs draw (``draw_conditional``): used by ``ebm.sample`` and ``ebm.fit``,
the exact joint distribution (chi-square against enumeration) on both the compiled kernel
and the eager fallback, and on the fallback the same chains as the generic
conditional-then-draw path for the same seed. With the kernel the two paths give the same
distribution but not always the same chains: the fused draw takes its own sigmoid (within
2.5 ulp of ``torch.sigmoid``, ``tests/test_bernoulli.py``), so a unit whose two
probabilities differ in the last bit can be drawn differently (about 1 in 3e7 units)."""

import pytest
import torch
from models import all_states
from stattools import chi_square_pvalue, state_index

import ebm
from ebm.ops import kernels
from ebm.samplers import gibbs

ALPHA = 1e-4  # as tests/test_gibbs.py: a correct sampler fails 1 in 10^4 seeds


def make(kind: str, dtype: torch.dtype) -> ebm.EnergyModel:
    generator = torch.Generator().manual_seed(0)
    if kind == "gaussian":
        model = ebm.GaussianRBM(5, 3, seed=0)
    else:
        model = (ebm.CenteredRBM if kind == "centered" else ebm.RBM)(5, 3, seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
        if kind == "centered":
            model.recenter(mu=torch.rand(5, generator=generator), lam=torch.rand(3, generator=generator))
    return model.to(dtype)


def generic(model: ebm.EnergyModel) -> ebm.EnergyModel:
    """The same model through the generic path: a subclass that redefines ``conditional``."""

    class Generic(type(model)):
        def conditional(self, name, state):
            return super().conditional(name, state)

    copy = Generic.__new__(Generic)
    copy.__dict__.update(model.__dict__)
    return copy


@pytest.fixture(params=["kernel", "eager"])
def path(request, monkeypatch):
    """Run on the compiled kernel (skipped where it cannot be built), then on the fallback."""
    if request.param == "eager":
        monkeypatch.setenv(kernels.ENV, "0")
    elif kernels.kernels() is None:
        pytest.skip("the compiled kernels are unavailable here")
    return request.param


@pytest.mark.filterwarnings("ignore:Chains not mixed")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["rbm", "centered", "gaussian"])
def test_fast_and_generic_paths_give_the_same_chains_on_the_fallback(kind, dtype, monkeypatch):
    monkeypatch.setenv(kernels.ENV, "0")
    model = make(kind, dtype)
    slow = generic(model)
    assert slow.draw_conditional("h", {"v": torch.zeros(2, 5, dtype=dtype)}) is None
    fast_chains = ebm.sample(model, ebm.Gibbs(), n_chains=300, n_steps=20, seed=7)
    slow_chains = ebm.sample(slow, ebm.Gibbs(), n_chains=300, n_steps=20, seed=7)
    for name in ("v", "h"):
        assert torch.equal(fast_chains[name], slow_chains[name])
    assert fast_chains["h"].dtype == dtype


@pytest.mark.filterwarnings("ignore:Chains not mixed")
def test_sample_and_fit_use_the_fast_path(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the generic draw was used")

    monkeypatch.setattr(gibbs, "draw", refuse)
    for model in (make("rbm", torch.float32), make("centered", torch.float32), make("gaussian", torch.float32)):
        ebm.sample(model, ebm.Gibbs(), n_chains=10, n_steps=3, seed=0)
    rbm = make("rbm", torch.float32)
    ebm.fit(rbm, {"v": (torch.rand(50, 5) < 0.5).float()}, epochs=1, batch_size=25, n_chains=10, metrics=None)


def test_draws_are_new_tensors_each_step():
    """Chains.last and the trainer keep what they are given: no buffer is reused across steps."""
    model = make("rbm", torch.float32)
    sampler = ebm.Gibbs()
    state = model.random_state(4, torch.Generator().manual_seed(0))
    sstate = sampler.init(model, state)
    first, _ = sampler.step(model, sstate)
    kept = {k: v.clone() for k, v in first.state.items()}
    second, _ = sampler.step(model, first)
    for name in ("v", "h"):
        assert torch.equal(first.state[name], kept[name])
        assert first.state[name].data_ptr() != second.state[name].data_ptr()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["rbm", "centered"])
def test_joint_matches_enumeration(kind, dtype, path):
    model = make(kind, dtype)
    states = all_states(8).double()
    with torch.no_grad():
        probs = torch.softmax(-model.double().energy({"v": states[:, :5], "h": states[:, 5:]}), 0)
    model = model.to(dtype)
    chains = ebm.sample(model, ebm.Gibbs(), n_chains=20_000, n_steps=1, burn_in=30, seed=11)
    bits = torch.cat([chains["v"][-1], chains["h"][-1]], 1)
    counts = torch.bincount(state_index(bits), minlength=2**8)
    assert chi_square_pvalue(counts, probs) > ALPHA


def step_by_step() -> ebm.Gibbs:
    """Gibbs without its compiled multi-sweep path: one Python-level sweep per step."""
    sampler = ebm.Gibbs()
    sampler.run_steps = lambda *args, **kwargs: None
    return sampler


@pytest.mark.filterwarnings("ignore:Chains not mixed")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["rbm", "centered"])
def test_compiled_sweeps_give_the_same_chains_as_step_by_step(kind, dtype, path):
    """``RBM.gibbs_sweeps`` (several sweeps per call, buffers reused) against one sweep per
    step: the same draws, last states and sweep count, thinned with a remainder, after a
    burn-in, with a clamped block, and in the PCD negative phase."""
    model = make(kind, dtype)
    run = {"n_chains": 40, "n_steps": 17, "thin": 5, "burn_in": 3, "seed": 5}
    fast, slow = ebm.sample(model, ebm.Gibbs(), **run), ebm.sample(model, step_by_step(), **run)
    for name in ("v", "h"):
        assert torch.equal(fast[name], slow[name])
        assert torch.equal(fast.last[name], slow.last[name])
    assert fast.sampler_state.n_sweeps == slow.sampler_state.n_sweeps == 20
    observed = {"v": (torch.rand(40, 5, generator=torch.Generator().manual_seed(1)) < 0.5).to(dtype)}
    clamped = [ebm.sample(model, s, n_steps=6, thin=3, observed=observed, seed=2) for s in (ebm.Gibbs(), step_by_step())]
    assert torch.equal(clamped[0]["h"], clamped[1]["h"])
    assert torch.equal(clamped[0].last["v"], observed["v"])
    negatives = []
    for sampler in (ebm.Gibbs(), step_by_step()):
        pcd = ebm.training.negatives.PersistentChains(k=4, n_chains=30)
        generator = torch.Generator().manual_seed(3)
        pcd.setup(model, sampler, {"v": observed["v"]}, generator)
        negatives.append([pcd(model, sampler, {"v": observed["v"]}, generator) for _ in range(2)])
    for fast_batch, slow_batch in zip(*negatives, strict=True):
        for name in ("v", "h"):
            assert torch.equal(fast_batch[name], slow_batch[name])


def test_compiled_sweeps_leave_the_callers_tensors_alone():
    """The multi-sweep path reuses buffers between its sweeps, never the state it was given."""
    if kernels.kernels() is None:
        pytest.skip("the compiled kernels are unavailable here")
    model = make("rbm", torch.float32)
    sampler = ebm.Gibbs()
    sstate = sampler.init(model, model.random_state(6, torch.Generator().manual_seed(0)))
    kept = {k: v.clone() for k, v in sstate.state.items()}
    after = sampler.run_steps(model, sstate, 3)
    assert after is not None and after.n_sweeps == 3
    for name in ("v", "h"):
        assert torch.equal(sstate.state[name], kept[name])
        assert after.state[name].data_ptr() != sstate.state[name].data_ptr()


def eighths(shape, generator, low=-16, high=17, dtype=torch.float32) -> torch.Tensor:
    """Multiples of 1/8: products with 0/1 states are exact in float32 in any summation order,
    so chunked and whole-matrix products give the same floats on any BLAS."""
    return torch.randint(low, high, shape, generator=generator).to(dtype) / 8


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("centered", [False, True])
def test_chunked_draw_is_the_fused_draw_of_the_whole_logits(dtype, centered):
    """``rbm_draw`` (the compiled sweeps' draw: chunks of rows, product by BLAS, bias added in
    the draw) against ``sigmoid_bernoulli_`` of the whole logits ``(x - offset) @ W + bias``
    with the same generator state: the same draws. 1000 chains of 64x100 make 4 chunks of
    250 rows, whose spans (25,000 and 16,000 units) end inside blocks of random bits."""
    compiled = kernels.kernels()
    if compiled is None:
        pytest.skip("the compiled kernels are unavailable here")
    generator = torch.Generator().manual_seed(12)
    n_v, n_h, rows = 64, 100, 1000
    assert compiled.rbm_chunk_rows(rows, n_v, n_h) == 250
    W, a, b = (
        eighths((n_v, n_h), generator, dtype=dtype),
        eighths((n_v,), generator, dtype=dtype),
        eighths((n_h,), generator, dtype=dtype),
    )
    mu, lam = (
        (eighths((n_v,), generator, 0, 9, dtype), eighths((n_h,), generator, 0, 9, dtype)) if centered else (None, None)
    )
    v = (torch.rand(rows, n_v, generator=generator) < 0.5).to(dtype)
    h = (torch.rand(rows, n_h, generator=generator) < 0.5).to(dtype)
    for name, given, logits in (
        ("h", v, (v - mu if centered else v) @ W + b),
        ("v", h, (h - lam if centered else h) @ W.T + a),
    ):
        drawn = compiled.rbm_draw(W, a, b, name, given, mu, lam, torch.Generator().manual_seed(13))
        whole = compiled.sigmoid_bernoulli_(logits, torch.Generator().manual_seed(13))
        assert drawn.dtype == dtype and torch.equal(drawn, whole), name


@pytest.mark.filterwarnings("ignore:Chains not mixed")
def test_chunked_sweeps_do_not_depend_on_threads_and_match_step_by_step():
    """Several chunks (1000 chains of 64x100): the same chains on 1, 2 and 3 threads, and the
    same as one Python-level sweep per step (``draw_conditional`` per block)."""
    if kernels.kernels() is None:
        pytest.skip("the compiled kernels are unavailable here")
    model = ebm.RBM(64, 100, seed=0)
    with torch.no_grad():
        model.W.normal_(0, 0.3, generator=torch.Generator().manual_seed(14))
    run = {"n_chains": 1000, "n_steps": 3, "thin": 3, "seed": 15}
    threads = torch.get_num_threads()
    try:
        chains = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            chains.append(ebm.sample(model, ebm.Gibbs(), **run))
        slow = ebm.sample(model, step_by_step(), **run)
    finally:
        torch.set_num_threads(threads)
    for name in ("v", "h"):
        for other in [*chains[1:], slow]:
            assert torch.equal(chains[0].last[name], other.last[name]), name
    assert 0.3 < chains[0].last["h"].mean() < 0.7
