"""MCMC diagnostics on tensors laid out as ``(n_draws, n_chains, *shape)``.

Thin wrappers over ``pyro.ops.stats`` (nothing re-derived here) that fix the layout used
throughout ``ebm``: draws on dim 0, chains on dim 1.
"""

from __future__ import annotations

import torch
from pyro.ops import stats


def _float(x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() < 2:
        raise ValueError(f"diagnostics need draws laid out as (n_draws, n_chains, ...), got shape {tuple(x.shape)}")
    return x if x.is_floating_point() else x.double()


# Elements of pyro's cumulative-minimum intermediate, (n_draws / 2)^2 per site, allowed at once.
_ESS_WORKSPACE = 2**24


def ess(x: torch.Tensor) -> torch.Tensor:
    """Effective sample size over all chains (Geyer's initial monotone sequence), shape ``x.shape[2:]``.

    Sites are processed in chunks: pyro's estimator builds an ``(n_draws/2)^2`` intermediate
    per site, which for whole blocks at once would not fit in memory.
    """
    x = _float(x)
    if x.shape[0] < 2:
        raise ValueError(f"ESS needs at least 2 draws per chain, got {x.shape[0]}")
    sites = x.reshape(x.shape[0], x.shape[1], -1)
    per_chunk = max(1, _ESS_WORKSPACE // max(1, (x.shape[0] // 2) ** 2))
    out = [
        stats.effective_sample_size(sites[..., i : i + per_chunk], chain_dim=1, sample_dim=0)
        for i in range(0, sites.shape[2], per_chunk)
    ]
    return torch.cat(out).reshape(x.shape[2:])


def rhat(x: torch.Tensor) -> torch.Tensor:
    """Split R-hat (Gelman-Rubin); values well above 1 (e.g. > 1.01) flag unmixed chains."""
    x = _float(x)
    if x.shape[0] < 4:
        raise ValueError(f"split R-hat needs at least 4 draws per chain, got {x.shape[0]}")
    return stats.split_gelman_rubin(x, chain_dim=1, sample_dim=0)


def autocorrelation(x: torch.Tensor) -> torch.Tensor:
    """Autocorrelation along the draws of each chain, same shape as ``x`` (lag on dim 0)."""
    return stats.autocorrelation(_float(x), dim=0)


def mcse(x: torch.Tensor, effective_size: torch.Tensor | None = None) -> torch.Tensor:
    """Monte-Carlo standard error of the mean, ``sd / sqrt(ESS)``, shape ``x.shape[2:]``.

    Args:
        x: draws ``(n_draws, n_chains, ...)``.
        effective_size: ``ess(x)`` when already computed (it is the expensive part).
    """
    x = _float(x)
    effective_size = ess(x) if effective_size is None else effective_size
    return x.flatten(0, 1).std(0) / effective_size.clamp_min(1.0).sqrt()
