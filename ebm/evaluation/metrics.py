"""Per-row log-likelihoods of observed data, in nats."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ebm.evaluation.enumeration import enumerate_states, logsumexp_chunks
from ebm.evaluation.partition import log_partition, supports_free_energy
from ebm.model import EnergyModel, checked_energy


def free_energy_of(model: EnergyModel, data: Mapping[str, torch.Tensor], chunk_size: int = 2**12) -> torch.Tensor:
    """``F(data) = -log Σ_latent exp(-E(data, latent))``, shape ``(n,)``.

    Uses ``model.free_energy`` when it accepts the observed blocks; otherwise enumerates the
    discrete latent blocks; with no latent blocks it is the energy.
    """
    observed = [k for k in model.variables if k in data]
    latent = [k for k in model.variables if k not in data]
    if not latent:
        return checked_energy(model, data)
    if supports_free_energy(model, observed):
        return checked_energy(model, data, "free_energy")
    n = next(iter(data.values())).shape[0]
    out = []
    for row in range(n):
        x = {k: v[row : row + 1] for k, v in data.items()}

        def energies(x=x):
            for h in enumerate_states(model, latent, chunk_size):
                m = next(iter(h.values())).shape[0]
                full = {k: v.expand(m, *v.shape[1:]) for k, v in x.items()} | h
                yield -checked_energy(model, full)

        out.append(-logsumexp_chunks(energies()))
    return torch.stack(out).to(model.dtype)


def log_likelihood(
    model: EnergyModel,
    data: Mapping[str, torch.Tensor],
    log_z: float | None = None,
    batch_size: int = 10_000,
) -> torch.Tensor:
    """Per-row ``log p(observed) = -F(observed) - log Z``, latent blocks summed out, in nats.

    Args:
        model: the energy model.
        data: ``{name: (n, *shape)}`` for the observed blocks (e.g. ``{"v": X}`` for an RBM).
        log_z: the log partition function; computed exactly when ``None`` (raises when the
            model is too large to enumerate; pass an AIS estimate then).
        batch_size: rows evaluated at once.

    Returns:
        ``(n,)`` tensor of log-likelihoods in nats.
    """
    if not isinstance(data, Mapping) or not data:
        raise ValueError("data must be a non-empty dict of block name -> tensor, e.g. {'v': X}")
    data = model.as_state(data, what="data")
    n = model.check_state(data, blocks=[k for k in model.variables if k in data], what="data")
    if log_z is None:
        log_z = log_partition(model, method="exact")
    with torch.no_grad():
        free = torch.cat(
            [free_energy_of(model, {k: v[i : i + batch_size] for k, v in data.items()}) for i in range(0, n, batch_size)]
        )
    return -free - float(log_z)
