"""Cheap training monitors: pseudo-log-likelihood and reconstruction error.

Neither needs the partition function. The pseudo-log-likelihood ``Σᵢ log p(xᵢ | x₋ᵢ)``
(Besag 1975) is summed over every site, or estimated without bias from ``m`` distinct random
sites per row scaled by ``D / m``. scikit-learn's ``BernoulliRBM.score_samples`` is the
``m = 1`` case: one random flip per row times ``D``, whose per-row value has a spread of
several nats; it is a noisy proxy, not the log-likelihood (compare with the exact
``ebm.log_likelihood`` on small models).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn.functional import softplus

from ebm.evaluation.metrics import free_energy_of
from ebm.model import EnergyModel


def _observed(model: EnergyModel, data: Mapping[str, torch.Tensor], what: str) -> tuple[dict, list[str], int]:
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"{what} needs data as a non-empty dict of block name -> tensor, e.g. {{'v': X}}")
    data = model.as_state(data, what="data")
    names = [k for k in model.variables if k in data]
    n = model.check_state(data, blocks=names, what="data")
    return data, names, n


def pseudo_log_likelihood(
    model: EnergyModel,
    data: Mapping[str, torch.Tensor],
    sites: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-row pseudo-log-likelihood ``Σᵢ log p(xᵢ | x₋ᵢ)`` of the observed blocks, in nats.

    Each conditional is ``log p(xᵢ | x₋ᵢ) = −softplus(F(x) − F(x with site i flipped))``,
    with ``F`` the free energy of the observed blocks (latent blocks summed out exactly).

    Args:
        model: the energy model; the observed blocks must be discrete (Binary or Spin).
        data: ``{name: (n, *shape)}`` observed blocks.
        sites: ``None`` sums over every site (one free-energy evaluation per site). An
            integer ``m`` draws ``m`` distinct sites per row uniformly and returns their sum
            times ``D / m`` (``D`` sites in all): an unbiased estimate of the full sum.
        generator: random stream for the site draws.

    Returns:
        ``(n,)`` tensor in nats.
    """
    data, names, n = _observed(model, data, "pseudo_log_likelihood")
    domains = [model.variables[k] for k in names]
    continuous = [k for k, d in zip(names, domains, strict=True) if not d.discrete]
    if continuous:
        raise ValueError(f"pseudo-likelihood here needs discrete observed blocks; {continuous} are continuous")
    many = [k for k, d in zip(names, domains, strict=True) if d.n_values != 2]
    if many:
        raise ValueError(f"pseudo-likelihood here needs two-valued blocks (Binary, Spin); {many} are Categorical")
    flat = torch.cat([data[k].reshape(n, -1) for k in names], dim=1)
    # flipping a two-valued site maps x to (down + up) - x
    total = torch.cat([flat.new_full((d.size,), sum(d.values)) for d in domains])
    n_sites = flat.shape[1]

    def unflatten(x: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = x.split([d.size for d in domains], dim=1)
        return {k: p.reshape(n, *d.shape) for k, d, p in zip(names, domains, parts, strict=True)}

    with torch.no_grad():
        f0 = free_energy_of(model, data)
        if sites is None or sites >= n_sites:
            columns = torch.arange(n_sites, device=flat.device).expand(n, n_sites)
            scale = 1.0
        else:
            if not isinstance(sites, int) or sites < 1:
                raise ValueError(f"sites must be a positive integer or None, got {sites!r}")
            u = torch.rand((n, n_sites), generator=generator, dtype=flat.dtype, device=flat.device)
            columns = u.argsort(dim=1)[:, :sites]
            scale = n_sites / sites
        rows = torch.arange(n, device=flat.device)
        pll = torch.zeros(n, dtype=f0.dtype, device=f0.device)
        for j in range(columns.shape[1]):
            col = columns[:, j]
            flipped = flat.clone()
            flipped[rows, col] = total[col] - flat[rows, col]
            pll -= softplus(f0 - free_energy_of(model, unflatten(flipped)))
    return pll * scale


def _conditional_mean(model: EnergyModel, name: str, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    domain = model.variables[name]
    try:
        mean = model.conditional(name, state).mean
    except NotImplementedError:
        raise ValueError(
            f"reconstruction_error needs {type(model).__name__}.conditional for every block; block '{name}' has none"
        ) from None
    if domain.discrete:
        down, up = domain.values
        mean = down + mean * (up - down)
    return mean.reshape(-1, *domain.shape)


def reconstruction_error(model: EnergyModel, data: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per-row squared error of a one-pass mean-field reconstruction of the observed blocks.

    The latent blocks are set, in order, to their conditional means given the data (blocks
    not yet set sit at the middle of their domain); then each observed block is
    reconstructed as its conditional mean given the latents. The error is
    ``Σ_sites (x − x̂)²`` per row (for binary data: the expected number of wrong sites
    when the reconstruction is read as probabilities, less its variance). Needs
    ``model.conditional`` for every block.

    Returns:
        ``(n,)`` tensor.
    """
    data, names, n = _observed(model, data, "reconstruction_error")
    latent = [k for k in model.variables if k not in data]
    with torch.no_grad():
        state = dict(data)
        for name in latent:
            domain = model.variables[name]
            middle = sum(domain.values) / 2 if domain.discrete else 0.0
            state[name] = torch.full((n, *domain.shape), middle, dtype=model.dtype, device=model.device)
        for name in latent:
            state[name] = _conditional_mean(model, name, state)
        error = torch.zeros(n, dtype=model.dtype, device=model.device)
        for name in names:
            recon = _conditional_mean(model, name, state)
            error += (data[name] - recon).square().reshape(n, -1).sum(1)
    return error
