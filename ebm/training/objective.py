"""The training objective: the surrogate of eq. 16 for the KL gradient of eq. 4.

``∂KL/∂θ = ⟨∂E/∂θ⟩_data − ⟨∂E/∂θ⟩_model`` (eq. 4). With the samples of both phases held
fixed (detached), the scalar ``mean E(data-phase states) − mean E(model-phase states)`` has
exactly this gradient, so autograd gives eq. 4 (eq. 11 for the RBM) for any energy.

Only the first-order gradient is right: the surrogate ignores that the samples themselves
depend on θ, so its Hessian is not the Hessian of the KL divergence. Use it with first-order
optimizers (SGD, Adam, ...), never with Newton-type methods or for curvature estimates.

When the model has a ``free_energy`` for the observed blocks (the RBM's ``F(v)``), the
data phase uses it: the latent blocks are summed out exactly, which gives the
Rao-Blackwellised, lower-variance estimate of the same gradient (``∂F/∂θ = ⟨∂E/∂θ⟩_{h|v}``).
Otherwise the data phase samples the latent blocks with the observed blocks clamped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from ebm.evaluation.partition import supports_free_energy
from ebm.model import EnergyModel, State
from ebm.samplers.base import Sampler
from ebm.training.negatives import clamped_latents


def uses_free_energy(model: EnergyModel, observed: Iterable[str]) -> bool:
    """Whether the data phase sums the latent blocks out with ``model.free_energy``.

    True when some blocks are latent and ``free_energy`` accepts exactly the ``observed`` ones.
    """
    observed = list(observed)
    if all(k in observed for k in model.variables):
        return False
    return supports_free_energy(model, observed)


def phase_energy(model: EnergyModel, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Energy of a phase's states, shape ``(batch,)``, in nats.

    A state with every block gets ``model.energy``; a state missing the latent blocks gets
    ``model.free_energy`` (the latents summed out).
    """
    if all(k in state for k in model.variables):
        return model.energy(state)
    return model.free_energy(state)


def _mean(energy: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return energy.mean()
    return (weight * energy).sum() / weight.sum()


def surrogate(
    model: EnergyModel,
    data: Mapping[str, torch.Tensor],
    negatives: Mapping[str, torch.Tensor],
    *,
    free_energy_negatives: bool = False,
    data_weight: torch.Tensor | None = None,
    model_weight: torch.Tensor | None = None,
    energy_l2: float = 0.0,
) -> torch.Tensor:
    """The scalar whose gradient is the KL gradient of eq. 4 (eq. 16), in nats.

    ``mean E(data) − mean E(negatives)``, both sets of states detached. Its first-order
    gradient is exact (given the samples); its second-order gradient is not (see the
    module docstring).

    Args:
        model: the energy model.
        data: data-phase states ``{name: (n_data, *shape)}``: the observed blocks only (the
            latents are then summed out by ``free_energy``), or every block with the latents
            sampled given the data.
        negatives: model-phase states ``{name: (n_model, *shape)}`` with every block.
        free_energy_negatives: use ``free_energy`` of the negatives' blocks that ``data``
            has, summing their other blocks out too (a Rao-Blackwellised model phase).
        data_weight: optional ``(n_data,)`` non-negative weights of the data rows (e.g.
            exact probabilities); uniform when ``None``.
        model_weight: optional ``(n_model,)`` weights of the negatives.
        energy_l2: coefficient of the energy penalty ``energy_l2 * mean(E_data² + E_model²)``
            that keeps energies from drifting (Du & Mordatch 2019); 0 disables it.

    Returns:
        A scalar tensor.
    """
    data = {k: v.detach() for k, v in data.items()}
    keep = data.keys() if free_energy_negatives else model.variables.keys()
    negatives = {k: v.detach() for k, v in negatives.items() if k in keep}
    e_data = phase_energy(model, data)
    e_model = phase_energy(model, negatives)
    loss = _mean(e_data, data_weight) - _mean(e_model, model_weight)
    if energy_l2:
        loss = loss + energy_l2 * (_mean(e_data.square(), data_weight) + _mean(e_model.square(), model_weight))
    return loss


def data_phase(
    model: EnergyModel,
    sampler: Sampler,
    batch: Mapping[str, torch.Tensor],
    k: int,
    generator: torch.Generator | None,
    sum_latents: bool,
) -> State:
    """The awake-phase states of a data batch.

    With ``sum_latents`` (decide it once with ``uses_free_energy``), the batch itself: the
    latents are summed out by ``free_energy`` in ``surrogate``. Otherwise every block:
    the latent blocks start at random and take ``k`` steps of ``sampler`` with the batch's
    blocks clamped (for conditionally independent latents, as in the RBM, one Gibbs step is
    an exact draw).

    Args:
        batch: observed blocks ``{name: (n, *shape)}``.
        k: sampler steps for the latent blocks.
        generator: random stream of the draws.

    Returns:
        ``{name: (n, *shape)}``, detached.
    """
    if sum_latents or all(name in batch for name in model.variables):
        return dict(batch)
    return clamped_latents(model, sampler, batch, k, generator)
