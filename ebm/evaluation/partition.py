"""Log partition functions ``log Z = log Σ_x exp(-E(x))`` (eq. 2), in nats."""

from __future__ import annotations

import itertools

import torch

from ebm.evaluation.enumeration import MAX_STATES, enumerate_states, logsumexp_chunks, n_bits
from ebm.model import EnergyModel, checked_energy


class UnreliableEstimate(RuntimeWarning):
    """A stochastic estimate (an AIS ``log Z``, and so the log-likelihoods computed with it)
    whose own diagnostics say that it and its standard error should not be trusted; the
    message says why and what to change."""


class LogPartition(float):
    """A log partition function estimate, usable as a float (nats).

    Attributes:
        stderr: standard error of the estimate (0 for exact enumeration).
        method: how it was computed.
        interval: ``(low, high)`` confidence interval in nats (a point for exact values).
        ess: effective sample size of importance weights (``None`` where there are none).
        info: extra method-specific records (e.g. AIS log-weights).
    """

    def __new__(
        cls,
        value: float,
        stderr: float = 0.0,
        method: str = "exact",
        interval: tuple[float, float] | None = None,
        ess: float | None = None,
        **info,
    ):
        self = super().__new__(cls, value)
        self.stderr = float(stderr)
        self.method = method
        self.interval = (float(value), float(value)) if interval is None else (float(interval[0]), float(interval[1]))
        self.ess = None if ess is None else float(ess)
        self.info = info
        return self

    def __repr__(self) -> str:
        return f"LogPartition({float(self):.6g} ± {self.stderr:.3g}, method={self.method!r})"


def supports_free_energy(model: EnergyModel, names) -> bool:
    """Whether ``model.free_energy`` accepts states of exactly the blocks ``names``."""
    probe = model.random_state(1, blocks=names)
    try:
        with torch.no_grad():
            model.free_energy(probe)
    except NotImplementedError:
        return False
    return True


def exact_plan(model: EnergyModel) -> tuple[list[str], bool]:
    """The cheapest way to enumerate ``model``: the blocks to enumerate and whether the others
    are summed out by ``free_energy``. Raises ``ValueError`` when nothing is enumerable."""
    names = list(model.variables)
    candidates = []
    if all(model.variables[k].discrete for k in names):
        candidates.append((n_bits(model, names), names, False))
    for r in range(1, len(names)):
        for subset in itertools.combinations(names, r):
            if all(model.variables[k].discrete for k in subset) and supports_free_energy(model, list(subset)):
                candidates.append((n_bits(model, subset), list(subset), True))
    if not candidates:
        raise ValueError(
            f"{type(model).__name__} has continuous blocks that free_energy() does not integrate out: "
            f"exact log Z needs enumerable discrete blocks; use method='ais'"
        )
    _, subset, use_free = min(candidates, key=lambda c: c[0])
    return subset, use_free


def exact_log_partition(model: EnergyModel, chunk_size: int = 2**16, max_states: int = MAX_STATES) -> LogPartition:
    """``log Z`` by enumeration: over all states, or over the smallest block set whose
    complement ``free_energy`` sums out (an RBM enumerates its smaller layer)."""
    subset, use_free = exact_plan(model)
    method = "free_energy" if use_free else "energy"
    with torch.no_grad():
        states = enumerate_states(model, subset, chunk_size, max_states)
        value = logsumexp_chunks(-checked_energy(model, s, method) for s in states)
    return LogPartition(value.item(), 0.0, "exact", enumerated=subset)


def log_partition(model: EnergyModel, method: str = "exact", **kwargs) -> LogPartition:
    """Log partition function of ``model`` in nats.

    Args:
        model: the energy model.
        method: ``"exact"``: enumeration (``chunk_size``, ``max_states`` keywords); raises
            ``ValueError`` when the state space is too large. ``"ais"``: annealed importance
            sampling (``n_betas``, ``n_runs``, ``schedule``, ``data`` or ``base``, ``sampler``,
            ...; see ``ebm.evaluation.ais.ais_log_partition``).
        **kwargs: passed to the method.

    Returns:
        ``LogPartition``: a float with ``.stderr`` (and ``.interval``, ``.ess`` for AIS).
    """
    from ebm.evaluation.ais import ais_log_partition  # ais builds on this module

    methods = {"exact": exact_log_partition, "ais": ais_log_partition}
    if method not in methods:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(methods)}")
    return methods[method](model, **kwargs)
