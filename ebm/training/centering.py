"""Centering (Melchior, Fischer & Wiskott 2016): the trainer's centred update of a plain
``RBM`` (``CenteredUpdate``, on by default) and a callback for ``CenteredRBM``.

``CenteredUpdate`` takes each optimizer step in the centred coordinates of a plain
``ebm.RBM`` while the model stays a plain RBM. With offsets ``μ`` (visible) and ``λ``
(hidden), the centred parameters are ``W_c = W``, ``a_c = a + Wλ``, ``b_c = b + Wᵀμ``
(``CenteredRBM``'s energy with these parameters is the plain energy plus a constant). By the
chain rule the gradient of any loss in those coordinates is ``∂L/∂W_c = ∂L/∂W − ∂L/∂a λᵀ −
μ (∂L/∂b)ᵀ``, ``∂L/∂a_c = ∂L/∂a``, ``∂L/∂b_c = ∂L/∂b`` (for the likelihood: the centred
gradient ``⟨(v − μ)(h − λ)ᵀ⟩_data − ⟨(v − μ)(h − λ)ᵀ⟩_model``). So one step is: centre the
gradient, move ``a, b`` to ``a_c, b_c``, let the optimizer step (its state, e.g. Adam's
moments, lives in the centred coordinates), move back. Offsets: ``μ`` the data's mean (the
value the paper's sliding average tends to), ``λ = ½`` (the midpoint; tracking the hidden
means as the paper does measured no better on the digits, ``benchmarks/RESULTS.md``), both
fixed for the run, so nothing is added to a checkpoint and every rank has the same offsets.

The callback:

Use with ``ebm.models.CenteredRBM``::

    rbm = ebm.CenteredRBM(784, 500)
    ebm.fit(rbm, {"v": X}, callbacks=[ebm.Centering(rate=0.01)])

After each optimizer step the offsets move towards the batch's mean activities by an
exponential moving average, ``μ ← (1 − ν)μ + ν·mean(v_data)`` and ``λ ← (1 − ν)λ +
ν·mean(p(h = 1 | v_data))`` (the "dd" variant: both offsets from the data phase), and the
model's ``recenter`` shifts the biases so that the distribution is unchanged. ``ν`` (the
paper's sliding-average rate, 0.01 there) is ``rate``.
"""

from __future__ import annotations

import torch

from ebm.model import EnergyModel
from ebm.models.rbm import RBM

#: the hidden offset ``λ`` of ``CenteredUpdate``
HIDDEN_OFFSET = 0.5


def supports_centered_update(model: EnergyModel) -> bool:
    """Whether ``CenteredUpdate`` applies: a plain ``ebm.RBM`` (not a subclass, which may
    redefine its energy) whose trained parameters are ``W``, ``a`` and ``b``."""
    if type(model) is not RBM:
        return False
    return {name for name, p in model.named_parameters() if p.requires_grad} == {"W", "a", "b"}


class CenteredUpdate:
    """Optimizer steps of a plain ``RBM`` in centred coordinates (module doc).

    Call ``centre_gradient`` once the gradients are final (after any all-reduce), then
    ``enter`` before the optimizer step and ``leave`` after it. The model is a plain RBM
    before ``enter`` and after ``leave``.

    Args:
        model: an ``RBM`` (``supports_centered_update``).
        v: ``(n, n_visible)`` training data; ``μ`` is its column mean.
    """

    def __init__(self, model: RBM, v: torch.Tensor):
        self.model = model
        with torch.no_grad():
            self.mu = v.to(model.W.dtype).mean(0)
        self.lam = torch.full((model.n_hidden,), HIDDEN_OFFSET, dtype=model.W.dtype, device=model.W.device)

    def centre_gradient(self) -> None:
        """``W.grad ← W.grad − a.grad λᵀ − μ b.gradᵀ`` (the gradient in centred coordinates)."""
        model = self.model
        # both rank-1 terms in one product: one pass over W.grad (half the time at 784x500)
        model.W.grad.addmm_(torch.stack((model.a.grad, self.mu), 1), torch.stack((self.lam, model.b.grad)), alpha=-1.0)

    def enter(self) -> None:
        """``a ← a + Wλ``, ``b ← b + Wᵀμ``."""
        self._shift(1.0)

    def leave(self) -> None:
        """``a ← a − Wλ``, ``b ← b − Wᵀμ`` with the stepped ``W``."""
        self._shift(-1.0)

    def _shift(self, sign: float) -> None:
        model = self.model
        with torch.no_grad():
            model.a.addmv_(model.W, self.lam, alpha=sign)
            model.b.addmv_(model.W.T, self.mu, alpha=sign)


class Centering:
    """Callback that keeps a ``CenteredRBM``'s offsets at the data's mean activities.

    Args:
        rate: the moving-average rate ``ν`` in ``(0, 1]`` of the offsets (1: the last batch).
        visible: update ``μ``.
        hidden: update ``λ``.
    """

    def __init__(self, rate: float = 0.01, visible: bool = True, hidden: bool = True):
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"rate must be in (0, 1], got {rate!r}")
        self.rate, self.visible, self.hidden = float(rate), bool(visible), bool(hidden)

    def on_train_begin(self, trainer) -> None:
        model = trainer.model
        if not callable(getattr(model, "recenter", None)):
            raise TypeError(
                f"Centering needs a model with offsets and recenter(), e.g. ebm.CenteredRBM; got {type(model).__name__}"
            )

    def on_batch_end(self, trainer, batch: dict, negatives: dict) -> None:
        model = trainer.model
        with torch.no_grad():
            v = batch["v"]
            mu = torch.lerp(model.mu, v.mean(0), self.rate) if self.visible else None
            lam = None
            if self.hidden:
                lam = torch.lerp(model.lam, torch.sigmoid(model.hidden_logits(v)).mean(0), self.rate)
            model.recenter(mu=mu, lam=lam)
