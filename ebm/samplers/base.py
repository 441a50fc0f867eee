"""The sampler protocol shared by every MCMC kernel in ``ebm``.

Kernels are BlackJAX-style but object-oriented: a sampler holds only its settings; the
evolving quantities (the chains' state, cached energies and gradients, adapted step
sizes) live in a ``SamplerState`` returned by ``init`` and threaded through ``step``.
``step`` returns the new sampler state and an info dict of per-chain tensors
(``(n_chains,)``: acceptance probability, accepted flag, ...) that ``ebm.sample`` records.
Samplers never sync the host inside ``step``.

Warm-up: a caller that runs a burn-in of ``n`` steps calls
``start_adaptation(model, sampler_state, n)``, then ``n`` times ``step(..., adapt=True)``,
then ``end_adaptation``; adaptive samplers size their tuning schedule to ``n``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from ebm.model import EnergyModel, State


@dataclass
class SamplerState:
    """What a sampler carries from one step to the next.

    Attributes:
        state: the full state ``{name: (n_chains, *shape)}``, observed blocks included.
        observed: names of the clamped blocks; they are never changed.
    """

    state: State
    observed: frozenset[str]

    @property
    def latent(self) -> list[str]:
        """Names of the blocks the sampler updates, in the order of ``state``."""
        return [k for k in self.state if k not in self.observed]


class Sampler:
    """Base class of MCMC kernels.

    Subclasses implement ``init`` and ``step``; adaptive kernels also ``start_adaptation``
    and ``end_adaptation``; kernels whose state caches model-dependent values also ``resume``.
    """

    #: whether ``step`` needs autograd (gradient-based samplers); ``ebm.sample`` runs
    #: others under ``torch.no_grad()``
    needs_grad: bool = False

    def init(
        self,
        model: EnergyModel,
        state: Mapping[str, torch.Tensor],
        observed: Iterable[str] = (),
        generator: torch.Generator | None = None,
    ) -> SamplerState:
        """Prepare to sample ``model`` from ``state``, with the blocks in ``observed`` clamped."""
        return SamplerState(dict(state), frozenset(observed))

    def step(
        self,
        model: EnergyModel,
        sampler_state: SamplerState,
        generator: torch.Generator | None = None,
        adapt: bool = False,
    ) -> tuple[SamplerState, dict[str, torch.Tensor]]:
        """One transition of every chain. ``adapt`` is true during burn-in (tuning allowed)."""
        raise NotImplementedError

    def start_adaptation(self, model: EnergyModel, sampler_state: SamplerState, n_steps: int) -> SamplerState:
        """Called once before a burn-in of ``n_steps`` ``adapt=True`` steps: set up tuning
        sized to that length, starting from the values in ``sampler_state`` (a fresh
        ``init`` or a state carried from an earlier run). Without this call ``adapt=True``
        tunes nothing. The default does nothing."""
        return sampler_state

    def end_adaptation(self, model: EnergyModel, sampler_state: SamplerState) -> SamplerState:
        """Called once after burn-in: freeze tuned parameters. The default does nothing."""
        return sampler_state

    def resume(self, model: EnergyModel, sampler_state: SamplerState) -> SamplerState:
        """A state carried over from an earlier run (``chains.sampler_state``), made ready to
        continue on ``model``: checked against this sampler's settings, with model-dependent
        caches redone (the parameters may have changed since). The default checks the type."""
        if not isinstance(sampler_state, SamplerState):
            raise TypeError(f"{type(self).__name__} cannot continue from a {type(sampler_state).__name__}")
        return sampler_state

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


def check_sampler(sampler: object, where: str) -> Sampler:
    """``sampler`` if it is a sampler instance, else a ``TypeError`` naming ``where`` (e.g.
    ``"ebm.sample"``) and the fix; a sampler class given instead of an instance is the
    common slip (``ebm.Gibbs`` for ``ebm.Gibbs()``)."""
    if isinstance(sampler, type) and issubclass(sampler, Sampler):
        name = sampler.__name__
        raise TypeError(f"{where} needs a sampler instance, got the class {name}: write {name}() (with its settings)")
    if not isinstance(sampler, Sampler):
        raise TypeError(f"{where} needs an ebm sampler such as ebm.Gibbs() or ebm.HMC(), got {type(sampler).__name__}")
    return sampler
