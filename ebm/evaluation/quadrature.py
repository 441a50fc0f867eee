"""Grid quadrature for 2-D continuous models: ``log Z``, normalised log-densities and the exact
KL divergence from a known data density.

On a ``n × n`` midpoint grid over the square ``bounds``², with cell area ``ΔA``:
``log Z ≈ logsumexp(−E(xᵢ)) + log ΔA`` and
``KL(p ‖ q) ≈ Σᵢ p(xᵢ) (log p(xᵢ) − log q(xᵢ)) ΔA`` with ``q = exp(−E)/Z`` (nats). Both
densities are renormalised on the grid, so the KL is that of the two densities restricted to
the square; the midpoint rule's error is ``O(h²)`` for smooth densities, ``h`` the cell side.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ebm.evaluation.partition import LogPartition
from ebm.model import EnergyModel, checked_energy
from ebm.variables import Real


def grid(bounds: tuple[float, float] = (-4.0, 4.0), n: int = 256, dtype=None, device=None) -> tuple[torch.Tensor, float]:
    """Midpoints of an ``n × n`` grid over ``[lo, hi]²``: ``(n * n, 2)`` points (row-major, the
    second coordinate varying slowest) and the cell area."""
    lo, hi = map(float, bounds)
    if not hi > lo or n < 2:
        raise ValueError(f"need bounds lo < hi and n >= 2, got bounds={bounds}, n={n}")
    side = (hi - lo) / n
    axis = lo + side * (torch.arange(n, dtype=dtype, device=device) + 0.5)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], -1), side * side


def _block(model: EnergyModel) -> str:
    variables = model.variables
    if len(variables) != 1:
        raise ValueError(f"grid quadrature needs a model with one Real(2) block, got {variables}")
    name, domain = next(iter(variables.items()))
    if not isinstance(domain, Real) or tuple(domain.shape) != (2,):
        raise ValueError(f"grid quadrature needs a model with one Real(2) block, got {variables}")
    return name


def grid_log_density(
    model: EnergyModel, bounds: tuple[float, float] = (-4.0, 4.0), n: int = 256, chunk: int = 65536
) -> tuple[torch.Tensor, LogPartition]:
    """The model's normalised log-density ``−E − log Z`` on the grid, shape ``(n, n)`` (row
    ``i`` is the ``i``-th value of the second coordinate), and ``log Z`` by quadrature."""
    name = _block(model)
    points, area = grid(bounds, n, model.dtype, model.device)
    with torch.no_grad():
        energy = torch.cat([checked_energy(model, {name: p}) for p in points.split(chunk)]).double()
    if not torch.isfinite(energy).all():
        raise ValueError("the model's energy is NaN/inf somewhere on the grid; log Z by quadrature is undefined")
    log_z = torch.logsumexp(-energy, 0) + math.log(area)
    result = LogPartition(log_z.item(), 0.0, "grid", bounds=tuple(bounds), n=n)
    return (-energy - log_z).reshape(n, n), result


def grid_log_partition(model: EnergyModel, bounds: tuple[float, float] = (-4.0, 4.0), n: int = 256) -> LogPartition:
    """``log Z`` of a model over one ``Real(2)`` block by midpoint quadrature over ``bounds``², nats."""
    return grid_log_density(model, bounds, n)[1]


def kl_divergence(
    log_density: Callable[[torch.Tensor], torch.Tensor],
    model: EnergyModel,
    bounds: tuple[float, float] = (-4.0, 4.0),
    n: int = 256,
) -> float:
    """``KL(p ‖ q)`` in nats between a data density ``p`` (given by ``log_density(points (m, 2))
    -> (m,)``, e.g. ``ebm.datasets.toy2d("moons").log_prob``; ``-inf`` allowed off its support)
    and the model ``q``, both restricted to ``bounds``² and integrated on the grid."""
    log_q, _ = grid_log_density(model, bounds, n)
    points, area = grid(bounds, n, torch.float64)
    log_p = log_density(points).double()
    log_p = log_p - torch.logsumexp(log_p, 0) - math.log(area)
    p = log_p.exp()
    support = p > 0
    return (area * (p[support] * (log_p[support] - log_q.reshape(-1)[support]))).sum().item()
