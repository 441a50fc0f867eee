"""The RBM's gradient by matrix products (``ebm.training.rbm_step``) equals autograd of the
free-energy surrogate, and ``ebm.fit`` uses it for RBMs."""

import pytest
import torch

import ebm
from ebm.ops import kernels
from ebm.training import rbm_step
from ebm.training.objective import surrogate
from ebm.training.rbm_step import rbm_gradient, supports_fast_gradient

SIZES = {"small": (7, 5, 9, 13), "large": (96, 64, 40, 50)}  # large: above the C++ row loop's limit


def model_and_phases(kind, size="small"):
    n_v, n_h, n_data, n_model = SIZES[size]
    generator = torch.Generator().manual_seed(0)
    model = (ebm.CenteredRBM if kind == "centered" else ebm.RBM)(n_v, n_h, seed=0).double()
    with torch.no_grad():
        for p in model.parameters():
            # large: weights scaled so that |u| stays below torch's softplus threshold (20), above
            # which autograd's reference takes softplus(u) = u (a 1e-9 gradient error), not ours
            p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64) * (0.2 if size == "large" else 1.0))
        if kind == "centered":
            model.recenter(mu=torch.rand(n_v, generator=generator), lam=torch.rand(n_h, generator=generator))
    data = {"v": (torch.rand(n_data, n_v, generator=generator) < 0.4).double()}
    negatives = {
        "v": (torch.rand(n_model, n_v, generator=generator) < 0.6).double(),
        "h": (torch.rand(n_model, n_h, generator=generator) < 0.5).double(),
    }
    return model, data, negatives


@pytest.mark.parametrize("path", ["kernel", "eager"])
@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("kind", ["rbm", "centered"])
def test_gradient_equals_autograd_of_the_surrogate(kind, size, path, monkeypatch):
    """On the compiled kernels (C++: the row loop for small models, ATen products for large
    ones; skipped where they cannot be built) and on the eager path."""
    if path == "eager":
        monkeypatch.setenv(kernels.ENV, "0")
    elif kernels.kernels() is None:
        pytest.skip("the compiled kernels are unavailable here")
    model, data, negatives = model_and_phases(kind, size)
    loss = surrogate(model, data, negatives, free_energy_negatives=True)
    loss.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    fast_loss = rbm_gradient(model, data, negatives)
    torch.testing.assert_close(fast_loss, loss.detach(), rtol=1e-12, atol=1e-12)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-12, atol=1e-12, msg=name)


def test_applies_to_plain_and_centered_rbms_only():
    v = {"v": torch.zeros(2, 3)}
    assert supports_fast_gradient(ebm.RBM(3, 2), v) and supports_fast_gradient(ebm.CenteredRBM(3, 2), v)
    assert not supports_fast_gradient(ebm.GaussianRBM(3, 2), v)
    assert not supports_fast_gradient(ebm.RBM(3, 2), {"v": v["v"], "h": torch.zeros(2, 2)})

    class Custom(ebm.RBM):
        pass

    assert not supports_fast_gradient(Custom(3, 2), v)
    frozen = ebm.RBM(3, 2)
    frozen.a.requires_grad_(False)
    assert not supports_fast_gradient(frozen, v)


def test_fit_uses_it(monkeypatch):
    calls = []
    original = rbm_step.rbm_gradient

    def counted(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(rbm_step, "rbm_gradient", counted)
    x = (torch.rand(40, 6, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    ebm.fit(ebm.RBM(6, 3, seed=0), {"v": x}, epochs=2, batch_size=20, n_chains=10, metrics=None)
    assert len(calls) == 4
    ebm.fit(ebm.RBM(6, 3, seed=0), {"v": x}, epochs=1, batch_size=20, n_chains=10, metrics=None, energy_l2=0.1)
    assert len(calls) == 4


@pytest.mark.parametrize("kind", ["rbm", "centered"])
def test_float32_row_loop_matches_the_float64_gradient(kind):
    """The C++ row loop in float32 (what ``ebm.fit`` runs on small models) against float64;
    and it declines a model too large for it."""
    compiled = kernels.kernels()
    if compiled is None:
        pytest.skip("the compiled kernels are unavailable here")
    model, data, negatives = model_and_phases(kind)
    exact = rbm_gradient(model, data, negatives), *(p.grad.clone() for p in (model.W, model.a, model.b))
    model = model.float()
    offsets = (model.mu, model.lam) if kind == "centered" else ()
    rows = compiled.rbm_gradient_rows(model.W, model.a, model.b, data["v"].float(), negatives["v"].float(), *offsets)
    assert len(rows) == 4
    for got, want in zip(rows, exact, strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    large, data, negatives = model_and_phases(kind, "large")
    offsets = (large.mu, large.lam) if kind == "centered" else ()
    assert compiled.rbm_gradient_rows(large.W, large.a, large.b, data["v"], negatives["v"], *offsets) == []
