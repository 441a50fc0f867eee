"""Domains of the variable blocks of an energy model: ``Binary``, ``Spin`` and ``Real``.

A domain knows its event shape, how to draw a random initial state for a batch of chains,
and how to check that data lies in its support. Discrete domains (``Binary``, ``Spin``)
also know their two values, which lets samplers flip sites and lets exact evaluation
enumerate states.
"""

from __future__ import annotations

import math

import torch


class Domain:
    """Base class of a block's domain.

    Args:
        *shape: the event shape of one state of the block, e.g. ``Spin(4, 4)`` for a 4x4
            lattice. A batch of states has shape ``(batch, *shape)``.
    """

    discrete: bool = False
    #: the two values of a discrete domain, "down" first
    values: tuple[float, float] = ()

    def __init__(self, *shape: int):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
            shape = tuple(shape[0])
        if not shape or any(not isinstance(s, int) or s < 1 for s in shape):
            raise ValueError(f"{type(self).__name__} needs a shape of positive integers, got {shape}")
        self.shape = torch.Size(shape)

    @property
    def size(self) -> int:
        """Number of scalar sites in one state of the block."""
        return math.prod(self.shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(str, self.shape))})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.shape == other.shape

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(self.shape)))

    def random(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """A random initial state for ``n`` chains, shape ``(n, *shape)``."""
        raise NotImplementedError

    def validate(self, name: str, x: torch.Tensor) -> None:
        """Raise ``ValueError`` naming block ``name`` if ``x`` has a value outside the support."""
        if torch.isnan(x).any():
            raise ValueError(f"block '{name}' contains NaN")
        if torch.isinf(x).any():
            raise ValueError(f"block '{name}' contains inf")


class _TwoValued(Domain):
    discrete = True

    def random(self, n, *, generator=None, dtype=None, device=None):
        bits = torch.rand((n, *self.shape), generator=generator, dtype=dtype, device=device) < 0.5
        return self.from_bits(bits, dtype=dtype)

    def from_bits(self, bits: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Map 0/1 (or bool) ``bits`` to the domain's values ("up" for 1)."""
        down, up = self.values
        return bits.to(dtype or torch.get_default_dtype()) * (up - down) + down

    def flip(self, x: torch.Tensor) -> torch.Tensor:
        """The other value at every site of ``x``."""
        down, up = self.values
        return (up + down) - x

    def validate(self, name, x):
        super().validate(name, x)
        down, up = self.values
        bad = (x != down) & (x != up)
        if bad.any():
            example = x[bad][0].item()
            raise ValueError(
                f"block '{name}' is {type(self).__name__} and takes only the values "
                f"{down:g} and {up:g}; found {example:g} at {int(bad.sum())} site(s)"
            )


class Binary(_TwoValued):
    """Binary units with values {0, 1}; a conditional is a Bernoulli over the value 1."""

    values = (0.0, 1.0)


class Spin(_TwoValued):
    """Ising spins with values {-1, +1}; a conditional is a Bernoulli over the value +1."""

    values = (-1.0, 1.0)


class Real(Domain):
    """Real-valued (continuous) units on the whole real line; random init is standard normal."""

    def random(self, n, *, generator=None, dtype=None, device=None):
        return torch.randn((n, *self.shape), generator=generator, dtype=dtype, device=device)
