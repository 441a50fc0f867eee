"""The restricted Boltzmann machine of eq. 6: binary visible ``v`` and hidden ``h`` units."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.distributions import Bernoulli
from torch.nn.functional import softplus

from ebm.model import EnergyModel
from ebm.ops.bernoulli import sigmoid_bernoulli_
from ebm.ops.kernels import kernels
from ebm.variables import Binary


class RBM(EnergyModel):
    """Bernoulli-Bernoulli RBM, ``E(v, h) = -aᵀv - bᵀh - vᵀWh`` (eq. 6).

    Blocks ``"v"`` (``Binary(n_visible)``) and ``"h"`` (``Binary(n_hidden)``). Parameters
    ``W`` ``(n_visible, n_hidden)``, ``a`` ``(n_visible,)``, ``b`` ``(n_hidden,)``.

    Args:
        n_visible: number of visible units.
        n_hidden: number of hidden units.
        init_std: standard deviation of the initial Gaussian weights (biases start at 0).
        seed: seed of the weight initialisation (``None``: torch's global generator).
    """

    def __init__(self, n_visible: int, n_hidden: int, init_std: float = 0.01, seed: int | None = None):
        super().__init__(v=Binary(n_visible), h=Binary(n_hidden))
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(n_visible, n_hidden, generator=generator) * init_std)
        self.a = nn.Parameter(torch.zeros(n_visible))
        self.b = nn.Parameter(torch.zeros(n_hidden))

    @property
    def n_visible(self) -> int:
        return self.W.shape[0]

    @property
    def n_hidden(self) -> int:
        return self.W.shape[1]

    def energy(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``E(v, h)`` of eq. 6, shape ``(batch,)``."""
        v, h = state["v"], state["h"]
        return -(v @ self.a) - (h @ self.b) - ((v @ self.W) * h).sum(-1)

    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``vW + b`` of ``h`` given ``v``, shape ``(batch, n_hidden)``."""
        return torch.addmm(self.b, v, self.W)

    def visible_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``hWᵀ + a`` of ``v`` given ``h``, shape ``(batch, n_visible)``."""
        return torch.addmm(self.a, h, self.W.T)

    def conditional(self, name: str, state: Mapping[str, torch.Tensor]) -> Bernoulli:
        """``p(h | v)`` (eq. 14) or ``p(v | h)`` (eq. 15), factorised Bernoulli."""
        if name == "h":
            return Bernoulli(logits=self.hidden_logits(state["v"]), validate_args=False)
        if name == "v":
            return Bernoulli(logits=self.visible_logits(state["h"]), validate_args=False)
        raise KeyError(f"RBM has no block '{name}'")

    @torch.no_grad()
    def draw_conditional(
        self, name: str, state: Mapping[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> torch.Tensor | None:
        """Gibbs's fused draw of block ``name`` given the other: one product into a new tensor,
        then sigmoid and exact Bernoulli draw in place in one pass
        (``ebm.ops.bernoulli.sigmoid_bernoulli_``), no distribution object. With the compiled
        kernels (CPU, float32/float64, 2-d states) this is their ``rbm_draw``, the draw of
        ``gibbs_sweeps`` (chunks of rows, the bias added in the draw), so that one sweep per
        call gives the same chains as several. The same distribution as ``conditional``
        followed by ``ebm.samplers.gibbs.draw``; the same draws for the same generator on the
        eager fallback (``EBM_KERNELS=0``). ``(batch, n)``, owned by the caller.

        Returns ``None`` (use ``conditional``) when a subclass redefines ``conditional``.
        """
        if type(self).conditional is not RBM.conditional:
            return None
        if name not in ("v", "h"):
            raise KeyError(f"RBM has no block '{name}'")
        given = state["v" if name == "h" else "h"]
        offsets = self._sweep_offsets()
        if (
            offsets is not None
            and given.device.type == "cpu"
            and given.dim() == 2
            and given.dtype == self.W.dtype
            and self.W.dtype in (torch.float32, torch.float64)
        ):
            compiled = kernels()
            if compiled is not None:  # the compiled sweeps' own draw, so that their chains match these
                return compiled.rbm_draw(self.W, self.a, self.b, name, given, *offsets, generator)
        logits = self.hidden_logits(given) if name == "h" else self.visible_logits(given)
        return sigmoid_bernoulli_(logits, generator)

    def _sweep_offsets(self) -> tuple[torch.Tensor | None, torch.Tensor | None] | None:
        """The offsets ``(μ, λ)`` of the conditionals' logits ``(v − μ)W + b``, ``(h − λ)Wᵀ + a``
        for the compiled sweeps, or ``None`` when a subclass may define other conditionals."""
        return (None, None) if type(self) is RBM else None

    def gibbs_sweeps(
        self, blocks: tuple[str, ...], state: Mapping[str, torch.Tensor], k: int, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor] | None:
        """``k`` Gibbs sweeps in one call to the compiled kernels (``ebm.ops.kernels``), each
        drawing ``blocks`` (``"v"``, ``"h"``) in that order: the same ops and random draws as
        ``k`` sweeps of ``draw_conditional`` per block, so the same chains for the same
        generator, without Python's dispatch per sweep (what dominates small models). The
        chains are split into chunks of rows (from the sizes, not the thread count), each
        swept ``k`` times by one thread, product and draw while the chunk is in cache, with
        no synchronisation between sweeps; the draws do not depend on the thread count.

        Returns the new state ``{"v", "h"}`` (drawn blocks are new tensors), or ``None``
        (sweep block by block) without the kernels, off the CPU, for a dtype other than
        float32/float64 or for a subclass that may redefine its conditionals.
        """
        offsets = self._sweep_offsets()
        v, h = state["v"], state["h"]
        if offsets is None or v.device.type != "cpu" or self.W.dtype not in (torch.float32, torch.float64):
            return None
        compiled = kernels()
        if compiled is None:
            return None
        # no torch.no_grad() needed (a few µs a call): the C++ loop runs without autograd
        v, h = compiled.rbm_sweeps(self.W, self.a, self.b, v, h, list(blocks), k, *offsets, generator)
        return {"v": v, "h": h}

    def free_energy(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``F(v) = -aᵀv - Σⱼ softplus(vW + b)ⱼ`` for ``{"v"}``, or ``F(h)`` for ``{"h"}``; ``(batch,)``."""
        keys = set(state)
        if keys == {"v"}:
            v = state["v"]
            return -(v @ self.a) - softplus(self.hidden_logits(v)).sum(-1)
        if keys == {"h"}:
            h = state["h"]
            return -(h @ self.b) - softplus(self.visible_logits(h)).sum(-1)
        raise NotImplementedError(f"RBM.free_energy takes exactly one of the blocks 'v' or 'h', got {sorted(keys)}")

    @torch.no_grad()
    def init_visible_bias(self, v: torch.Tensor, eps: float = 1e-3) -> None:
        """Set ``a`` to the log-odds of the data marginals, clipped to ``[eps, 1 - eps]``.

        Args:
            v: binary data, shape ``(n, n_visible)``.
            eps: the marginals are clipped so that the biases stay finite.
        """
        v = self.as_state({"v": v}, what="data")["v"]
        self.check_state({"v": v}, blocks=["v"], what="data")
        p = v.mean(0).clamp(eps, 1 - eps)
        self.a.copy_(torch.log(p) - torch.log1p(-p))
