"""Domains of the variable blocks of an energy model: ``Binary``, ``Spin``, ``Categorical`` and ``Real``.

A domain knows its event shape, how to draw a random initial state for a batch of chains,
and how to check that data lies in its support. Discrete domains know their sites and the
number of values a site takes (``n_sites``, ``n_values``), which lets samplers update sites
and lets exact evaluation enumerate states; the two-valued ones (``Binary``, ``Spin``) also
know their two values.
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
        """Number of scalar entries in one state of the block."""
        return math.prod(self.shape)

    @property
    def n_sites(self) -> int:
        """Number of sites (variables) in one state: ``size`` except for one-hot ``Categorical``."""
        return self.size

    #: values one site of a discrete domain takes (2 for Binary/Spin, q for Categorical)
    n_values: int = 0

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
    n_values = 2

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
        down, up = self.values
        bad = (x != down) & (x != up)  # NaN and inf too: the NaN/inf passes run only on bad data
        if bad.any():
            super().validate(name, x)
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


class Categorical(Domain):
    """Categorical (Potts) sites, each taking one of ``n_categories`` values, one-hot encoded.

    ``Categorical(q, L, L)`` is an ``L x L`` lattice of q-state sites. A state of a batch has
    shape ``(batch, L, L, q)``: the last dimension is the one-hot code of the site's value
    (``x.argmax(-1)`` gives the integer codes, ``torch.nn.functional.one_hot(codes, q)``
    encodes them), in the model's floating dtype. One-hot states make the Potts energy
    ``-J * (x * x.roll(1, -2)).sum((-3, -2, -1))`` (a sum of ``δ(s_i, s_j)``) affine in every
    site, so ``ebm.Gibbs`` gets all q energy changes of many sites from one autograd pass.

    Args:
        n_categories: q >= 2.
        *shape: the shape of the lattice of sites (without the one-hot dimension).
    """

    discrete = True

    def __init__(self, n_categories: int, *shape: int):
        if isinstance(n_categories, bool) or not isinstance(n_categories, int) or n_categories < 2:
            raise ValueError(f"Categorical needs n_categories >= 2 (an integer), got {n_categories!r}")
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
            shape = tuple(shape[0])
        super().__init__(*shape, n_categories)
        self.n_values = n_categories
        self.sites = self.shape[:-1]

    @property
    def n_sites(self) -> int:
        return self.size // self.n_values

    def __repr__(self) -> str:
        return f"Categorical({self.n_values}, {', '.join(map(str, self.sites))})"

    def random(self, n, *, generator=None, dtype=None, device=None):
        codes = torch.randint(self.n_values, (n, *self.sites), generator=generator, device=device)
        return self.from_codes(codes, dtype=dtype)

    def from_codes(self, codes: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """One-hot states ``(*codes.shape, q)`` from integer codes in ``0..q-1``."""
        return torch.nn.functional.one_hot(codes.long(), self.n_values).to(dtype or torch.get_default_dtype())

    def validate(self, name, x):
        super().validate(name, x)
        bad_value = (x != 0) & (x != 1)
        if bad_value.any():
            raise ValueError(
                f"block '{name}' is {self!r}, one-hot encoded: entries must be 0 or 1, "
                f"found {x[bad_value][0].item():g}; encode integer codes with "
                f"torch.nn.functional.one_hot(codes, {self.n_values})"
            )
        bad_site = x.sum(-1) != 1
        if bad_site.any():
            raise ValueError(
                f"block '{name}' is {self!r}, one-hot encoded: every site needs exactly one 1 along the "
                f"last dimension; {int(bad_site.sum())} site(s) do not"
            )
