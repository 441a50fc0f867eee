"""Block Gibbs sampling for discrete blocks (and any block with a closed-form conditional)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch.distributions import Bernoulli, Independent, MultivariateNormal, Normal

from ebm.model import EnergyModel, checked_energy
from ebm.ops.bernoulli import bernoulli_
from ebm.samplers.base import Sampler, SamplerState
from ebm.variables import Domain


def draw(dist: torch.distributions.Distribution, domain: Domain, generator: torch.Generator | None) -> torch.Tensor:
    """One draw from a block's conditional, using ``generator`` for reproducibility.

    Bernoulli draws are exact (``ebm.ops.bernoulli``: 16 random bits per unit, made on all
    cores; ``torch.bernoulli`` is ~10x slower on the CPU) and are mapped to the domain's
    values (Bernoulli over "up": 1 for Binary, +1 for Spin).
    """
    if isinstance(dist, Independent):
        dist = dist.base_dist
    if isinstance(dist, Bernoulli):
        p = dist.probs.detach()
        x = bernoulli_(p.to(torch.promote_types(p.dtype, torch.float32), copy=True), generator).to(p.dtype)
        down, up = domain.values or (0.0, 1.0)
        if (down, up) != (0.0, 1.0):
            x.mul_(up - down).add_(down)
        return x
    if isinstance(dist, Normal):
        loc = dist.loc
        noise = torch.randn(loc.shape, generator=generator, dtype=loc.dtype, device=loc.device)
        return noise.mul_(dist.scale).add_(loc)
    if isinstance(dist, MultivariateNormal):
        loc = dist.loc
        noise = torch.randn(loc.shape, generator=generator, dtype=loc.dtype, device=loc.device)
        return loc + (dist.scale_tril @ noise.unsqueeze(-1)).squeeze(-1)
    raise TypeError(
        f"Gibbs can draw from Bernoulli, Normal, MultivariateNormal (optionally Independent) conditionals, "
        f"got {type(dist).__name__}"
    )


@dataclass
class GibbsState(SamplerState):
    """Gibbs sampler state: the chains plus, per updated block, how it is updated
    (``"conditional"`` or ``"sitewise"``)."""

    plan: dict[str, str] = field(default_factory=dict)


class Gibbs(Sampler):
    """Block Gibbs sampler: updates each non-observed block in turn from its conditional.

    A block whose model defines ``conditional`` is drawn from it in one batched step (the
    RBM's eq. 14-15). A discrete block without one is updated exactly, site by site, from
    energy differences: site ``i`` flips with probability ``sigmoid(E(x) - E(x with i
    flipped))``, the heat-bath rule, batched over chains. This makes any user energy over
    ``Binary``/``Spin`` blocks samplable; it costs one energy evaluation per site.

    Args:
        blocks: the blocks this sampler updates (default: every non-observed block). Used
            when Gibbs is one part of a composite sampler.
    """

    def __init__(self, blocks: Iterable[str] | None = None):
        self.blocks = None if blocks is None else tuple(blocks)

    def init(self, model, state, observed=(), generator=None) -> GibbsState:
        observed = frozenset(observed)
        names = [k for k in model.variables if k not in observed]
        if self.blocks is not None:
            unknown = [k for k in self.blocks if k not in model.variables]
            if unknown:
                raise ValueError(f"Gibbs was given unknown block(s) {unknown}")
            names = [k for k in names if k in self.blocks]
        plan = {}
        for name in names:
            plan[name] = self._plan(model, name, state)
        return GibbsState(dict(state), observed, plan)

    @staticmethod
    def _plan(model: EnergyModel, name: str, state: Mapping[str, torch.Tensor]) -> str:
        domain = model.variables[name]
        n = next(iter(state.values())).shape[0]
        try:
            with torch.no_grad():
                dist = model.conditional(name, state)
        except NotImplementedError:
            if domain.discrete:
                # The site-wise rule computes with energies: check one now, before any step.
                with torch.no_grad():
                    checked_energy(model, state)
                return "sitewise"
            raise TypeError(
                f"Gibbs cannot update the {domain!r} block '{name}': the model has no conditional() for it. "
                f"Use ebm.Langevin or ebm.HMC for continuous blocks."
            ) from None
        expected = torch.Size((n, *domain.shape))
        shape = dist.batch_shape + dist.event_shape
        if shape != expected:
            raise ValueError(
                f"{type(model).__name__}.conditional('{name}') has shape {tuple(shape)}, expected {tuple(expected)}"
            )
        return "conditional"

    def step(self, model, sampler_state, generator=None, adapt=False):
        state = dict(sampler_state.state)
        for name, how in sampler_state.plan.items():
            domain = model.variables[name]
            if how == "conditional":
                # the RBMs' fused draw (no distribution object, in place); None: not for this model
                fast = getattr(model, "draw_conditional", None)
                x = None if fast is None else fast(name, state, generator)
                state[name] = draw(model.conditional(name, state), domain, generator) if x is None else x
            else:
                state[name] = self._sitewise(model, name, domain, state, generator)
        return GibbsState(state, sampler_state.observed, sampler_state.plan), {}

    @staticmethod
    def _sitewise(model, name, domain, state, generator):
        x = state[name].clone()
        state = {**state, name: x}
        flat = x.view(x.shape[0], -1)
        energy = checked_energy(model, state)
        u = torch.rand(flat.shape, generator=generator, dtype=energy.dtype, device=energy.device)
        for i in range(flat.shape[1]):
            old = flat[:, i].clone()
            flat[:, i] = domain.flip(old)
            flipped = model.energy(state)
            accept = u[:, i] < torch.sigmoid(energy - flipped)
            flat[:, i] = torch.where(accept, flat[:, i], old)
            energy = torch.where(accept, flipped, energy)
        return x
