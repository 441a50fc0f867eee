"""The centered RBM of Melchior, Fischer & Wiskott (2016).

``E(v, h) = −(v − μ)ᵀW(h − λ) − aᵀ(v − μ) − bᵀ(h − λ)`` with offsets ``μ`` (visible) and
``λ`` (hidden) held as buffers. For fixed offsets it is the RBM of eq. 6 with biases
``a − Wλ`` and ``b − Wᵀμ`` (up to a constant energy shift), so it defines the same family;
what changes is the gradient: autograd of the eq. 16 surrogate now gives the *centered*
gradient ``⟨(v − μ)(h − λ)ᵀ⟩_data − ⟨(v − μ)(h − λ)ᵀ⟩_model`` for ``W``, which is much
better conditioned when ``μ, λ`` are near the mean activities. ``recenter`` moves the
offsets and reparametrises ``a, b`` so that the distribution is unchanged; the
``ebm.training.centering.Centering`` callback does this during training.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn.functional import softplus

from ebm.models.rbm import RBM


class CenteredRBM(RBM):
    """Bernoulli-Bernoulli RBM with centering offsets ``mu`` ``(n_visible,)`` and ``lam``
    ``(n_hidden,)`` (buffers, initially 0.5, the centre of the binary domain).

    Args: as ``ebm.RBM``.
    """

    def __init__(self, n_visible: int, n_hidden: int, init_std: float = 0.01, seed: int | None = None):
        super().__init__(n_visible, n_hidden, init_std, seed)
        self.register_buffer("mu", torch.full((n_visible,), 0.5))
        self.register_buffer("lam", torch.full((n_hidden,), 0.5))

    def energy(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The centered energy, shape ``(batch,)``, nats."""
        v, h = state["v"] - self.mu, state["h"] - self.lam
        return -(v @ self.a) - (h @ self.b) - ((v @ self.W) * h).sum(-1)

    def _sweep_offsets(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return (self.mu, self.lam) if type(self) is CenteredRBM else None

    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        """``(v − μ)W + b``, shape ``(batch, n_hidden)``."""
        return torch.addmm(self.b, v - self.mu, self.W)

    def visible_logits(self, h: torch.Tensor) -> torch.Tensor:
        """``(h − λ)Wᵀ + a``, shape ``(batch, n_visible)``."""
        return torch.addmm(self.a, h - self.lam, self.W.T)

    def free_energy(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``F(v) = −aᵀ(v − μ) + λᵀu − Σⱼ softplus(uⱼ)``, ``u = (v − μ)W + b`` (or the mirror
        image for ``{"h"}``), shape ``(batch,)``."""
        keys = set(state)
        if keys == {"v"}:
            v = state["v"]
            u = self.hidden_logits(v)
            return -((v - self.mu) @ self.a) + u @ self.lam - softplus(u).sum(-1)
        if keys == {"h"}:
            h = state["h"]
            u = self.visible_logits(h)
            return -((h - self.lam) @ self.b) + u @ self.mu - softplus(u).sum(-1)
        raise NotImplementedError(f"free_energy takes exactly one of the blocks 'v' or 'h', got {sorted(keys)}")

    @torch.no_grad()
    def init_visible_bias(self, v: torch.Tensor, eps: float = 1e-3) -> None:
        """``a`` at the data log-odds (as ``RBM``) and ``μ`` at the data mean (Melchior et al.)."""
        super().init_visible_bias(v, eps)
        self.recenter(mu=v.mean(0).clamp(eps, 1 - eps), shift_biases=False)

    @torch.no_grad()
    def recenter(self, mu: torch.Tensor | None = None, lam: torch.Tensor | None = None, shift_biases: bool = True) -> None:
        """Move the offsets to ``mu``/``lam`` (either may be ``None``: unchanged).

        With ``shift_biases`` the biases absorb the move, ``a += W(λ' − λ)``,
        ``b += Wᵀ(μ' − μ)``, so ``p(v, h)`` is unchanged (the energy shifts by a constant).
        """
        new_mu = self.mu if mu is None else mu.to(self.mu)
        new_lam = self.lam if lam is None else lam.to(self.lam)
        if shift_biases:
            self.a.add_(self.W @ (new_lam - self.lam))
            self.b.add_((new_mu - self.mu) @ self.W)
        self.mu.copy_(new_mu)
        self.lam.copy_(new_lam)

    def to_rbm(self) -> RBM:
        """The equivalent plain ``RBM``: the same ``p(v, h)``. The centered energy is the plain
        one plus ``C = aᵀμ + bᵀλ − μᵀWλ``, so ``log Z`` here is the plain ``log Z − C``."""
        rbm = RBM(self.n_visible, self.n_hidden).to(device=self.device, dtype=self.dtype)
        with torch.no_grad():
            rbm.W.copy_(self.W)
            rbm.a.copy_(self.a - self.W @ self.lam)
            rbm.b.copy_(self.b - self.mu @ self.W)
        return rbm
