"""The RBM's training gradient by matrix products, without autograd.

For the Bernoulli RBM (and the centered RBM) with both phases' hidden units summed out,
the surrogate ``mean F(v_data) − mean F(v_model)`` (``ebm.training.objective``) has the
gradient of eq. 8 in closed form. With ``u = (v − μ)W + b``, ``p = sigmoid(u)`` and
``F(v) = −aᵀ(v − μ) + λᵀu − Σⱼ softplus(uⱼ)`` (``μ = λ = 0`` for the plain RBM)::

    ∂F/∂W = (v − μ)ᵀ(λ − p),   ∂F/∂b = λ − p,   ∂F/∂a = −(v − μ)

so, stacking the data rows (weight ``+1/n_data``) over the model rows (``−1/n_model``) as
``X`` with weights ``c``, the whole gradient is one product ``X W``, a sigmoid and the
products ``Xᵀ D``, ``cᵀX`` with ``D = c ⊙ (λ − p)``: a handful of ops instead of the ~60
of autograd through two free energies. ``tests/test_rbm_step.py`` checks it against autograd.
On the CPU the same ops run in C++ when the compiled kernels are available
(``ebm.ops.kernels``), which saves Python's dispatch per op on small models.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn.functional import softplus

from ebm.model import EnergyModel
from ebm.models.centered import CenteredRBM
from ebm.models.rbm import RBM
from ebm.ops.kernels import kernels


def supports_fast_gradient(model: EnergyModel, observed: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``rbm_gradient`` applies: an ``RBM`` or ``CenteredRBM`` (not a subclass that
    redefines its energy) trained on ``{"v"}`` with ``W``, ``a``, ``b`` as its parameters."""
    kind = type(model)
    if kind not in (RBM, CenteredRBM) or set(observed) != {"v"}:
        return False
    return {name for name, p in model.named_parameters() if p.requires_grad} == {"W", "a", "b"}


def rbm_gradient(model: RBM, data: Mapping[str, torch.Tensor], negatives: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Set ``.grad`` of ``W``, ``a``, ``b`` to the gradient of ``mean F(data) − mean F(negatives)``
    (the free-energy surrogate of eq. 16 with both phases' hidden units summed out) and
    return that surrogate, a scalar in nats.

    Args:
        model: an ``RBM`` or ``CenteredRBM`` (``supports_fast_gradient``).
        data: ``{"v": (n_data, n_visible)}``.
        negatives: ``{"v": (n_model, n_visible), ...}``; only ``v`` is used.
    """
    v_data, v_model = data["v"], negatives["v"]
    centered = isinstance(model, CenteredRBM)
    if v_data.device.type == "cpu" and (compiled := kernels()) is not None:
        # the same ops in C++: a small model's update does not pay Python's dispatch per op
        offsets = (model.mu, model.lam) if centered else (None, None)
        loss, model.W.grad, model.a.grad, model.b.grad = compiled.rbm_gradient(
            model.W, model.a, model.b, v_data, v_model, *offsets
        )
        return loss  # the C++ runs without autograd: no torch.no_grad() (a few µs a call) needed
    with torch.no_grad():
        return _eager_gradient(model, v_data, v_model, centered)


def _eager_gradient(model: RBM, v_data: torch.Tensor, v_model: torch.Tensor, centered: bool) -> torch.Tensor:
    n_data, n_model = v_data.shape[0], v_model.shape[0]
    x = torch.cat([v_data, v_model])
    weight = torch.empty(n_data + n_model, dtype=x.dtype, device=x.device)
    weight[:n_data] = 1.0 / n_data
    weight[n_data:] = -1.0 / n_model
    if centered:
        x = x - model.mu
    u = torch.addmm(model.b, x, model.W)
    # F per row, weighted: -a.x + lam.u - sum softplus(u)
    free = softplus(u).sum(1).neg_().sub_(x @ model.a)
    if centered:
        free.add_(u @ model.lam)
    loss = weight @ free
    d = u.sigmoid_().neg_()
    if centered:
        d.add_(model.lam)
    d.mul_(weight[:, None])
    model.W.grad = x.T @ d
    model.b.grad = d.sum(0)
    model.a.grad = (weight @ x).neg_()
    return loss
