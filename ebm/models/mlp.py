"""A neural-network energy over one real block, for low-dimensional continuous densities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ebm.model import EnergyModel
from ebm.variables import Real


class MLPEnergy(EnergyModel):
    """``E(x) = f_θ(x) + |x|² / 2s²`` with ``f_θ`` a multilayer perceptron, over ``x`` ``Real(dim)``.

    The activations are SiLU: smooth, so the Langevin/HMC gradients ``∂E/∂x`` are
    continuous. The optional quadratic term (``prior_scale`` ``s``) keeps ``exp(−E)``
    integrable whatever the network does far from the data; ``None`` drops it.

    Args:
        dim: dimension of ``x`` (2 for the toy densities of ``ebm.datasets``).
        hidden: widths of the hidden layers.
        prior_scale: ``s`` above (same units as ``x``), or ``None``.
        seed: seed of the weight initialisation (``None``: torch's global generator).
    """

    def __init__(
        self, dim: int = 2, hidden: Sequence[int] = (64, 64), prior_scale: float | None = 4.0, seed: int | None = None
    ):
        super().__init__(x=Real(dim))
        if prior_scale is not None and not prior_scale > 0:
            raise ValueError(f"prior_scale must be positive or None, got {prior_scale!r}")
        hidden = list(hidden)
        if not hidden or any(not isinstance(h, int) or h < 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty list of positive widths, got {hidden!r}")
        if seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.net = self._build(dim, hidden)
        else:
            self.net = self._build(dim, hidden)
        self.prior_scale = prior_scale

    @staticmethod
    def _build(dim: int, hidden: list[int]) -> nn.Sequential:
        layers: list[nn.Module] = []
        width = dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.SiLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        return nn.Sequential(*layers)

    def energy(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``E(x)``, shape ``(batch,)``, nats."""
        x = state["x"]
        energy = self.net(x).squeeze(-1)
        if self.prior_scale is not None:
            energy = energy + 0.5 * x.square().sum(-1) / self.prior_scale**2
        return energy
