"""The sampler protocol shared by every MCMC kernel in ``ebm``.

Kernels are BlackJAX-style but object-oriented: a sampler holds only its settings; the
evolving quantities (the chains' state, cached energies and gradients, adapted step
sizes) live in a ``SamplerState`` returned by ``init`` and threaded through ``step``.
``step`` returns the new sampler state and an info dict of per-chain tensors
(``(n_chains,)``: acceptance probability, accepted flag, ...) that ``ebm.sample`` records.
Samplers never sync the host inside ``step``.
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

    Subclasses implement ``init`` and ``step``; adaptive kernels also ``end_adaptation``.
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

    def end_adaptation(self, model: EnergyModel, sampler_state: SamplerState) -> SamplerState:
        """Called once after burn-in: freeze tuned parameters. The default does nothing."""
        return sampler_state

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"
