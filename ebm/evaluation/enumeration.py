"""Enumerating every state of a set of discrete blocks, in chunks of bounded memory."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from ebm.model import EnergyModel, State
from ebm.variables import Categorical

#: enumeration refuses state spaces larger than this many states by default
MAX_STATES = 2**26


def n_bits(model: EnergyModel, names: Sequence[str]) -> float:
    """``log2`` of the number of joint states of the blocks ``names`` (all must be discrete):
    the number of binary sites when all are two-valued, ``n_sites * log2(q)`` for a
    ``Categorical`` block."""
    for name in names:
        domain = model.variables[name]
        if not domain.discrete:
            raise ValueError(f"block '{name}' is {domain!r}: continuous blocks cannot be enumerated")
    total = 0.0
    for k in names:
        domain = model.variables[k]
        total += domain.n_sites if domain.n_values == 2 else domain.n_sites * math.log2(domain.n_values)
    return int(total) if total == int(total) else total


def n_states(model: EnergyModel, names: Sequence[str]) -> int:
    """Number of joint states of the discrete blocks ``names``."""
    n_bits(model, names)  # checks that every block is discrete
    return math.prod(model.variables[k].n_values ** model.variables[k].n_sites for k in names)


def check_enumerable(model: EnergyModel, names: Sequence[str], max_states: int = MAX_STATES) -> float:
    """Return ``n_bits`` of ``names``; raise ``ValueError`` when there are more than ``max_states`` states."""
    bits = n_bits(model, names)
    if n_states(model, names) > max_states:
        raise ValueError(
            f"cannot enumerate blocks {list(names)}: 2^{bits:g} states exceed the limit of "
            f"{max_states:,} (2^{int(math.log2(max_states))}); use method='ais' for large models"
        )
    return bits


def enumerate_states(
    model: EnergyModel, names: Sequence[str], chunk_size: int = 2**16, max_states: int = MAX_STATES
) -> Iterator[State]:
    """Yield every joint state of the discrete blocks ``names`` as state dicts of at most
    ``chunk_size`` rows, in the model's dtype and device.

    State ``k`` writes ``k`` in mixed radix, least significant digit first, over the sites
    of the blocks in order: a two-valued site's digit is its bit ("up" for 1), a
    ``Categorical`` site's digit its code (one-hot encoded in the state)."""
    check_enumerable(model, names, max_states)
    device, dtype = model.device, model.dtype
    radices = torch.cat(
        [torch.full((model.variables[k].n_sites,), model.variables[k].n_values, dtype=torch.long) for k in names]
    )
    place = torch.cat([torch.ones(1, dtype=torch.long), radices.cumprod(0)[:-1]]).to(device)
    radices = radices.to(device)
    total = n_states(model, names)
    for start in range(0, total, chunk_size):
        index = torch.arange(start, min(start + chunk_size, total), device=device)
        digits = (index.unsqueeze(1) // place) % radices
        chunk, offset = {}, 0
        for name in names:
            domain = model.variables[name]
            part = digits[:, offset : offset + domain.n_sites]
            if isinstance(domain, Categorical):
                chunk[name] = domain.from_codes(part.reshape(-1, *domain.sites), dtype=dtype)
            else:
                chunk[name] = domain.from_bits(part, dtype=dtype).reshape(-1, *domain.shape)
            offset += domain.n_sites
        yield chunk


def logsumexp_chunks(values: Iterator[torch.Tensor]) -> torch.Tensor:
    """``log Σ exp`` over dim 0 of a stream of chunks, accumulated in float64."""
    total = None
    for v in values:
        lse = torch.logsumexp(v.double(), dim=0)
        total = lse if total is None else torch.logaddexp(total, lse)
    return total
