"""Enumerating every state of a set of discrete blocks, in chunks of bounded memory."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from ebm.model import EnergyModel, State

#: enumeration refuses state spaces larger than this many states by default
MAX_STATES = 2**26


def n_bits(model: EnergyModel, names: Sequence[str]) -> int:
    """Total number of binary sites in the blocks ``names`` (all must be discrete)."""
    for name in names:
        domain = model.variables[name]
        if not domain.discrete:
            raise ValueError(f"block '{name}' is {domain!r}: continuous blocks cannot be enumerated")
    return sum(model.variables[k].size for k in names)


def check_enumerable(model: EnergyModel, names: Sequence[str], max_states: int = MAX_STATES) -> int:
    """Return the number of bits of ``names``; raise ``ValueError`` when ``2**bits > max_states``."""
    bits = n_bits(model, names)
    if 2**bits > max_states:
        raise ValueError(
            f"cannot enumerate blocks {list(names)}: 2^{bits} states exceed the limit of "
            f"{max_states:,} (2^{int(math.log2(max_states))}); use method='ais' for large models"
        )
    return bits


def enumerate_states(
    model: EnergyModel, names: Sequence[str], chunk_size: int = 2**16, max_states: int = MAX_STATES
) -> Iterator[State]:
    """Yield every joint state of the discrete blocks ``names`` as state dicts of at most
    ``chunk_size`` rows, in the model's dtype and device. State ``k`` has the bits of ``k``
    (least significant first) at the sites of the blocks in order."""
    bits = check_enumerable(model, names, max_states)
    device, dtype = model.device, model.dtype
    powers = torch.arange(bits, device=device)
    total = 2**bits
    for start in range(0, total, chunk_size):
        index = torch.arange(start, min(start + chunk_size, total), device=device)
        flat = (index.unsqueeze(1) >> powers) & 1
        chunk, offset = {}, 0
        for name in names:
            domain = model.variables[name]
            part = flat[:, offset : offset + domain.size]
            chunk[name] = domain.from_bits(part, dtype=dtype).reshape(-1, *domain.shape)
            offset += domain.size
        yield chunk


def logsumexp_chunks(values: Iterator[torch.Tensor]) -> torch.Tensor:
    """``log Σ exp`` over dim 0 of a stream of chunks, accumulated in float64."""
    total = None
    for v in values:
        lse = torch.logsumexp(v.double(), dim=0)
        total = lse if total is None else torch.logaddexp(total, lse)
    return total
