"""Exact Bernoulli draws from 16 random bits per unit, the bits made on all cores.

A unit is on when ``u < p`` for a uniform ``u``; ``u`` need only be resolved as far as it
takes to decide that. The first 16 bits of ``u`` are an integer ``B`` in ``[0, 2^16)``:
with ``x = 2^16 p`` the unit is on when ``B < floor(x)``, off when ``B > floor(x)`` (or
``B = x``), and on a tie (``B = floor(x) < x``, probability ``2^-16``) it is on with the
probability ``r = x − B``, the residual, drawn the same way from 16 fresh bits. So
``P(on) = floor(x)/2^16 + r/2^16 = p`` exactly, for every float32/float64 ``p``: ``x`` and
``r`` are exact in floating point (a power-of-two scaling and the fraction of a float), so
no rounding enters; the recursion ends once the residual's bits are used up (after at most
about 10 levels in float32, 70 in float64, each on a ``2^-16`` share of the units).

In tensor terms one level is ``clamp(2^16 p − B, 0, 1)``: 1 (on), 0 (off) or the residual of
a tie, computed in place in ``p``'s own storage. Ties are found without scanning every unit
twice: the fractional parts are reduced per block of 1024 and only the blocks with one are
searched.

Random bits: ``torch.rand`` spends one 32-bit draw of a single-threaded generator per
uniform. Here the bits come as whole 64-bit words (four draws each), and above one chunk
(``CHUNK_WORDS``) the chunks are filled in parallel by generators seeded from the caller's
generator, one per chunk, on a thread pool (torch releases the GIL inside the fill). The
chunking and seeds do not depend on the number of threads, so a seeded run gives the same
draws on any machine and thread count (given the same torch).

Compiled kernel: on the CPU, when ``ebm.ops.kernels`` can build and load its C++ kernels
(``EBM_KERNELS=0`` disables them), the same algorithm runs in one fused pass on all torch
threads, with counter-based random bits (splitmix64 of a key and the unit's index, the key
one 64-bit draw from the caller's generator): exact in the same way, reproducible for any
thread count, but a different random stream from this eager path.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from ebm.ops.kernels import kernels

#: random bits per unit and level
BITS = 16
#: int64 words per chunk of random bits filled by one generator (256 KiB)
CHUNK_WORDS = 1 << 15
#: units per block when searching for ties
TIE_BLOCK = 1024
#: ``random_`` over the full 64-bit range (``from`` is a Python keyword)
_FULL_RANGE = {"from": -(2**63), "to": None}

_local = threading.local()
_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _executor(n_threads: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size != n_threads:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(n_threads, thread_name_prefix="ebm-bits")
            _pool_size = n_threads
        return _pool


def _fill(job: tuple[torch.Tensor, torch.Generator]) -> None:
    words, generator = job
    words.random_(**_FULL_RANGE, generator=generator)


def random_words(words: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill the int64 tensor ``words`` in place with independent uniform 64-bit words.

    On the CPU, tensors above ``CHUNK_WORDS`` words are filled chunk by chunk, each chunk by
    its own generator seeded from ``generator``, on ``torch.get_num_threads()`` threads; the
    result does not depend on the number of threads.
    """
    if words.dtype != torch.int64:
        raise TypeError(f"random_words fills int64 tensors, got {words.dtype}")
    flat = words.view(-1)
    if flat.device.type != "cpu" or flat.numel() <= CHUNK_WORDS:
        flat.random_(**_FULL_RANGE, generator=generator)
        return words
    chunks = flat.split(CHUNK_WORDS)
    seeds = torch.empty(len(chunks), dtype=torch.int64).random_(**_FULL_RANGE, generator=generator).tolist()
    generators = getattr(_local, "generators", [])
    while len(generators) < len(chunks):
        generators.append(torch.Generator())
    _local.generators = generators
    jobs = [(chunk, g.manual_seed(seed)) for chunk, g, seed in zip(chunks, generators, seeds, strict=False)]
    n_threads = min(torch.get_num_threads(), len(jobs))
    if n_threads <= 1:
        for job in jobs:
            _fill(job)
    else:
        list(_executor(n_threads).map(_fill, jobs))
    return words


def _buffers(n: int, dtype: torch.dtype, device: torch.device) -> tuple:
    """Reusable per-thread buffers for ``n`` units: ``ceil(n/4)`` random words, their first
    ``n`` 16-bit halves, ``n`` floats, and the floats padded with zeros to whole tie blocks,
    as ``(n_blocks, TIE_BLOCK)``. Small ``n`` (tie residuals) get fresh ones."""
    key = (n, dtype, device)
    cache = _local.__dict__.setdefault("buffers", {})
    entry = cache.get(key)
    if entry is None:
        words = torch.empty(-(-n // 4), dtype=torch.int64, device=device)
        padded = torch.zeros(-(-n // TIE_BLOCK) * TIE_BLOCK, dtype=dtype, device=device)
        entry = (words, words.view(torch.uint16)[:n], padded[:n], padded.view(-1, TIE_BLOCK))
        if n >= TIE_BLOCK:
            if len(cache) >= 8:  # a few block sizes live at a time; forget old ones
                cache.clear()
            cache[key] = entry
    return entry


def decide(p: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """One level of the draw, in place: ``p`` becomes ``clamp(2^16 p − bits, 0, 1)``, i.e.
    1 (on), 0 (off) or the tie's residual in ``(0, 1)``, the next level's probability.

    ``bits`` holds the integers ``B`` in ``[0, 2^16)`` in ``p``'s dtype. Exposed so that the
    tests can compute the probability the algorithm implies by enumerating every ``B``.
    """
    return p.mul_(2.0**BITS).sub_(bits).clamp_(0.0, 1.0)


def bernoulli_(p: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace the probabilities ``p`` (any shape, float32 or float64, in ``[0, 1]``) by exact
    Bernoulli draws, 1.0 with probability ``p``, in place; returns ``p``.

    Values above 1 count as 1 and below 0 as 0; NaN stays NaN. ``generator`` (on ``p``'s
    device) makes the draws reproducible.
    """
    if p.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"bernoulli_ draws from float32 or float64 probabilities, got {p.dtype}")
    if not p.is_contiguous():
        p.copy_(bernoulli_(p.contiguous(), generator))
        return p
    if p.device.type == "cpu" and (compiled := kernels()) is not None:
        return compiled.bernoulli_(p, generator)
    flat = p.view(-1)
    n = flat.numel()
    if n == 0:
        return p
    words, halves, bits, blocks = _buffers(n, flat.dtype, flat.device)
    random_words(words, generator)
    bits.copy_(halves)
    decide(flat, bits)
    ties = _ties(flat, bits, blocks)
    if ties is not None:
        # each residual is the next level's probability (the buffers are free again)
        flat[ties] = bernoulli_(flat[ties], generator)
    return p


def _ties(flat: torch.Tensor, scratch: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor | None:
    """Indices of the units left strictly between 0 and 1 (NaN excluded), or ``None``.
    ``scratch`` (``flat``'s size) is overwritten; ``blocks`` is it padded with zeros, viewed
    as ``(n_blocks, TIE_BLOCK)``."""
    torch.frac(flat, out=scratch)
    if blocks.shape[0] == 1:
        index = scratch.nonzero().view(-1)
    else:
        # fractions are >= 0, so a block sums to 0 exactly when it has no tie (NaN sums to NaN)
        found = blocks.sum(1).nonzero().view(-1)
        if found.numel() == 0:
            return None
        index = (found[:, None] * TIE_BLOCK + torch.arange(TIE_BLOCK, device=flat.device)).view(-1)
        index = index[blocks.view(-1)[index] != 0]
    index = index[scratch[index] == scratch[index]]
    return index if index.numel() else None


def sigmoid_bernoulli_(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace the logits (any shape, float32 or float64) by exact Bernoulli draws, 1.0 with
    probability ``sigmoid(logits)``, in place; returns ``logits``.

    With the compiled kernel, the sigmoid and the draw take one pass (its float32 sigmoid is
    Cephes' ``expf``, within 2.5 ulp like ``torch.sigmoid``'s, but not always bit-equal to
    it: the same distribution, not the same draws as ``bernoulli_(logits.sigmoid_())``);
    otherwise it is ``bernoulli_(logits.sigmoid_(), generator)``.
    """
    if logits.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"sigmoid_bernoulli_ draws from float32 or float64 logits, got {logits.dtype}")
    if logits.device.type == "cpu" and logits.is_contiguous() and (compiled := kernels()) is not None:
        return compiled.sigmoid_bernoulli_(logits, generator)
    return bernoulli_(logits.sigmoid_(), generator)
