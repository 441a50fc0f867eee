"""Export ``Chains`` to ArviZ (optional dependency: ``pip install "ebm[arviz]"``)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ebm.chains import Chains

# ArviZ's names for the usual sampler statistics
_STAT_NAMES = {"accept_prob": "acceptance_rate", "divergent": "diverging", "hamiltonian": "energy"}


def _arviz() -> Any:
    try:
        return importlib.import_module("arviz")
    except ImportError as err:
        raise ImportError(
            'Chains.to_arviz() needs ArviZ, an optional dependency: pip install "ebm[arviz]" (or pip install arviz)'
        ) from err


def _chain_first(x) -> np.ndarray:
    """``(n_draws, n_chains, ...)`` tensor -> ``(n_chains, n_draws, ...)`` array, ArviZ's layout."""
    return x.detach().cpu().transpose(0, 1).numpy()


def to_inference_data(chains: Chains) -> Any:
    """``chains`` as ArviZ data: ``InferenceData`` (ArviZ < 1) or a ``DataTree`` (ArviZ >= 1).

    Groups: ``posterior`` (sampled blocks), ``sample_stats`` (``lp = -energy`` and the
    sampler's records) and ``observed_data`` (clamped blocks, ``(n_chains, *shape)``).
    """
    az = _arviz()
    posterior = {k: _chain_first(v) for k, v in chains.draws.items() if k not in chains.observed}
    stats = {"lp": -_chain_first(chains.energy)}
    stats.update({_STAT_NAMES.get(k, k): _chain_first(v) for k, v in chains.stats.items()})
    observed = {k: chains.draws[k][0].detach().cpu().numpy() for k in chains.observed}
    groups = {"posterior": posterior, "sample_stats": stats}
    if observed:
        groups["observed_data"] = observed
    if int(az.__version__.split(".")[0]) >= 1:
        return az.from_dict(groups)
    return az.from_dict(**groups)
