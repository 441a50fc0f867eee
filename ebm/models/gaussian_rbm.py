"""Gaussian-Bernoulli RBM: real-valued visible ``v``, binary hidden ``h``."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn
from torch.distributions import Bernoulli, Normal
from torch.nn.functional import softplus

from ebm.model import EnergyModel
from ebm.ops.bernoulli import sigmoid_bernoulli_
from ebm.variables import Binary, Real

#: data further than this many of the model's visible spreads (sd, or mean offset) warn
SCALE_MISMATCH = 10.0


class GaussianRBM(EnergyModel):
    """Gaussian-Bernoulli RBM (Hinton & Salakhutdinov 2006; Cho et al. 2011)::

        E(v, h) = Σᵢ (vᵢ − aᵢ)² / 2σᵢ² − bᵀh − (v/σ)ᵀ W h

    Blocks ``"v"`` (``Real(n_visible)``) and ``"h"`` (``Binary(n_hidden)``). Parameters ``W``
    ``(n_visible, n_hidden)``, ``a`` ``(n_visible,)``, ``b`` ``(n_hidden,)`` and the per-unit
    ``log_sigma`` ``(n_visible,)`` (a parameter when ``learn_sigma``, else a buffer).

    Conditionals: ``p(v | h) = N(a + σ ⊙ Wh, σ²)``, ``p(h | v) = Bernoulli(sigmoid(b + (v/σ)ᵀW))``.
    Free energies (nats): ``F(v) = Σ (v − a)²/2σ² − Σⱼ softplus(b + (v/σ)ᵀW)ⱼ`` and, with ``v``
    integrated out, ``F(h) = −bᵀh − (a/σ)ᵀWh − |Wh|²/2 − Σ log σᵢ − (n_visible/2) log 2π``.
    ``F(h)`` makes ``ebm.log_partition(model)`` exact by enumerating the ``2^n_hidden``
    hidden states, and ``ebm.log_likelihood(model, {"v": X})`` a density in nats.

    Preprocessing: standardise each visible unit to zero mean and unit variance (e.g.
    ``(X − X.mean(0)) / X.std(0)``); the defaults assume it. On raw scales the quadratic
    term and the weights live on different scales and training easily blows up. Keep ``σ``
    below the data's spread at the start (default 0.5) and learn it in log space (default):
    each mixture component of ``p(v)`` has variance ``σ²``, so with ``σ = 1`` fixed on
    unit-variance data the best fit is ``W = 0`` and nothing is learned, while an
    unconstrained ``σ`` would leave the positive range. Data far outside the scale the model
    can reach warn ``ebm.model.DataWarning`` wherever they enter (``fit``,
    ``log_likelihood``; see ``data_warning``).

    Args:
        n_visible: number of real visible units.
        n_hidden: number of binary hidden units.
        sigma: initial (or fixed) standard deviation of every visible unit.
        learn_sigma: train ``log σ`` (True) or keep it fixed (False).
        init_std: standard deviation of the initial Gaussian weights.
        seed: seed of the weight initialisation (``None``: torch's global generator).
    """

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        sigma: float = 0.5,
        learn_sigma: bool = True,
        init_std: float = 0.1,
        seed: int | None = None,
    ):
        super().__init__(v=Real(n_visible), h=Binary(n_hidden))
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma!r}")
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(n_visible, n_hidden, generator=generator) * init_std)
        self.a = nn.Parameter(torch.zeros(n_visible))
        self.b = nn.Parameter(torch.zeros(n_hidden))
        log_sigma = torch.full((n_visible,), math.log(sigma))
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    @property
    def sigma(self) -> torch.Tensor:
        """Per-unit standard deviations ``σ``, shape ``(n_visible,)``."""
        return self.log_sigma.exp()

    def energy(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``E(v, h)``, shape ``(batch,)``, nats."""
        v, h = state["v"], state["h"]
        sigma = self.sigma
        quadratic = 0.5 * ((v - self.a) / sigma).square().sum(-1)
        return quadratic - h @ self.b - ((v / sigma) @ self.W * h).sum(-1)

    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        """``b + (v/σ)ᵀW``, shape ``(batch, n_hidden)``."""
        return torch.addmm(self.b, v / self.sigma, self.W)

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """``E[v | h] = a + σ ⊙ Wh``, shape ``(batch, n_visible)``."""
        return self.a + self.sigma * (h @ self.W.T)

    def conditional(self, name: str, state: Mapping[str, torch.Tensor]):
        """``p(h | v)`` (factorised Bernoulli) or ``p(v | h)`` (factorised Normal)."""
        if name == "h":
            return Bernoulli(logits=self.hidden_logits(state["v"]), validate_args=False)
        if name == "v":
            mean = self.visible_mean(state["h"])
            return Normal(mean, self.sigma.expand_as(mean), validate_args=False)
        raise KeyError(f"GaussianRBM has no block '{name}'")

    @torch.no_grad()
    def draw_conditional(
        self, name: str, state: Mapping[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> torch.Tensor | None:
        """Gibbs's fused draw of block ``name`` (no distribution object, in place,
        ``ebm.ops.bernoulli.sigmoid_bernoulli_`` for ``h``): the same distribution as
        ``conditional`` followed by ``ebm.samplers.gibbs.draw``, the same draws for the same
        generator on the eager fallback (``EBM_KERNELS=0``); ``(batch, n)``, owned by the
        caller. ``None`` (use ``conditional``) when a subclass redefines ``conditional``."""
        if type(self).conditional is not GaussianRBM.conditional:
            return None
        if name == "h":
            return sigmoid_bernoulli_(self.hidden_logits(state["v"]), generator)
        if name == "v":
            mean = self.visible_mean(state["h"])
            noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
            return noise.mul_(self.sigma).add_(mean)
        raise KeyError(f"GaussianRBM has no block '{name}'")

    def free_energy(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``F(v)`` for ``{"v"}`` (h summed out) or ``F(h)`` for ``{"h"}`` (v integrated out); ``(batch,)``."""
        keys = set(state)
        if keys == {"v"}:
            v = state["v"]
            quadratic = 0.5 * ((v - self.a) / self.sigma).square().sum(-1)
            return quadratic - softplus(self.hidden_logits(v)).sum(-1)
        if keys == {"h"}:
            h = state["h"]
            wh = h @ self.W.T
            log_norm = self.log_sigma.sum() + 0.5 * self.n_visible * math.log(2 * math.pi)
            return -(h @ self.b) - wh @ (self.a / self.sigma) - 0.5 * wh.square().sum(-1) - log_norm
        raise NotImplementedError(f"GaussianRBM.free_energy takes exactly one of the blocks 'v' or 'h', got {sorted(keys)}")

    def visible_reach(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Where ``p(v)`` can put its mass, per visible unit (each ``(n_visible,)``): the lowest
        and highest means ``a + σ ⊙ Wh`` over binary ``h``, and an upper bound on the sd of
        ``vᵢ``, ``σᵢ √(1 + (Σⱼ|Wᵢⱼ|)²/4)`` (``σᵢ²`` plus the variance of a mean confined to
        an interval of width ``σᵢ Σⱼ|Wᵢⱼ|``)."""
        sigma = self.sigma
        low = self.a + sigma * self.W.clamp(max=0).sum(1)
        high = self.a + sigma * self.W.clamp(min=0).sum(1)
        spread = sigma * (1 + self.W.abs().sum(1).square() / 4).sqrt()
        return low, high, spread

    def data_warning(self, state: Mapping[str, torch.Tensor], what: str = "data") -> str | None:
        """A message when the visible data lie on a scale the model cannot reach.

        For each unit, the data's sd and the distance of its mean from the model's reachable
        means are measured in units of the model's largest possible sd (``visible_reach``).
        Beyond ``SCALE_MISMATCH`` (10) the quadratic term ``(v − a)²/2σ²`` costs of the order
        of ``10²/2 = 50`` nats per unit and row whatever the weights: the log-likelihood is
        dominated by it (−1.8·10⁵ nats per row after 3 epochs on the 8x8 digits scaled to
        0-100, against −22 on the digits as they are) and training crawls, since ``a`` and
        ``log σ`` move by about ``lr`` per step. Typical cause: data not standardised."""
        v = state.get("v")
        if v is None or v.shape[0] < 2:
            return None
        with torch.no_grad():
            low, high, spread = self.visible_reach()
            mean, sd = v.mean(0), v.std(0)
            offset = (low - mean).clamp(min=0) + (mean - high).clamp(min=0)
            ratio = torch.maximum(sd, offset) / spread
            worst = int(ratio.argmax())
            if not ratio[worst] > SCALE_MISMATCH:
                return None
            n_bad = int((ratio > SCALE_MISMATCH).sum())
        # the text names the data only, so that evaluating each epoch repeats the same warning
        # (shown once) rather than a new one as the model's spread changes
        return (
            f"{what} block 'v' is on a scale this GaussianRBM cannot reach: in {n_bad} of {self.n_visible} units "
            f"(e.g. unit {worst}: mean {mean[worst].item():.3g}, sd {sd[worst].item():.3g}) the data's sd, or its "
            f"mean's distance from the model's, exceeds {SCALE_MISMATCH:g} times the largest sd the model gives the "
            f"unit, so (v - a)^2/2 sigma^2 dominates the log-likelihood; "
            f"standardise each unit first: X = (X - X.mean(0)) / X.std(0)"
        )

    @property
    def n_visible(self) -> int:
        return self.W.shape[0]

    @property
    def n_hidden(self) -> int:
        return self.W.shape[1]
