"""Block Gibbs sampling for discrete blocks (and any block with a closed-form conditional)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch.distributions import Bernoulli, Independent, MultivariateNormal, Normal

from ebm.model import EnergyModel, checked_energy
from ebm.ops.bernoulli import bernoulli_
from ebm.samplers.base import Sampler, SamplerState
from ebm.samplers.coloring import Structure, structure
from ebm.samplers.local import quadratic_sweep, update_color
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
    (``"conditional"`` or ``"colored"``), and per coloured block the per-chain count of NaN
    energy differences so far and the sweep of the first one (``-1``: none), on the device.

    Attributes:
        n_sweeps: sweeps taken since ``init``.
    """

    plan: dict[str, str] = field(default_factory=dict)
    nan_count: dict[str, torch.Tensor] = field(default_factory=dict)
    nan_sweep: dict[str, torch.Tensor] = field(default_factory=dict)
    n_sweeps: int = 0


class Gibbs(Sampler):
    """Block Gibbs sampler: updates each non-observed block in turn from its conditional.

    A block whose model defines ``conditional`` is drawn from it in one batched step (the
    RBM's eq. 14-15). A discrete block (``Binary``, ``Spin``, ``Categorical``) without one
    is updated by graph-coloured block Gibbs: the interaction graph of the energy in that
    block is discovered once per model and parameter values (``ebm.samplers.coloring``),
    coloured greedily, and all sites of a colour, which are conditionally independent, are
    drawn at once from their exact heat-bath conditionals (``ebm.samplers.local``). A sweep
    costs one sparse product per colour for a one-block energy quadratic in its sites
    (Ising, spin glasses, one-hot Potts: local fields from the discovered Hessian), one
    energy forward+backward pass per colour for energies affine in every site (2 for a
    square lattice), else ``(k - 1)·N`` batched energy evaluations (k values a site). See
    ``docs/structure.md``.

    Args:
        blocks: the blocks this sampler updates (default: every non-observed block). Used
            when Gibbs is one part of a composite sampler.
        coloring: optional, for blocks without ``conditional``: integer colour labels of the
            block's site shape (e.g. ``(i + j) % 2`` for a checkerboard), or an
            ``ebm.samplers.coloring.Graph`` of edges to colour greedily; a dict
            ``{block: ...}`` for several blocks. It is verified against the energy and a
            wrong one raises ``ValueError`` naming two interacting sites of one colour.

    Info per step, per coloured block, ``(n_chains,)``: ``nan_energy_<block>``, the NaN energy
    differences met so far (those sites keep their values), and ``nan_sweep_<block>``, the
    sweep of the first (``-1``: none); ``ebm.sample`` warns once at the end.
    """

    def __init__(self, blocks: Iterable[str] | None = None, coloring: object = None):
        self.blocks = None if blocks is None else tuple(blocks)
        self.coloring = coloring

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
        colored = [k for k, how in plan.items() if how == "colored"]
        self._check_coloring(model, colored)
        n = next(iter(state.values())).shape[0]
        device = next(iter(state.values())).device
        for name in colored:
            self._structure(model, name, state)  # discover (or verify the user's colouring) now
        return GibbsState(
            dict(state),
            observed,
            plan,
            nan_count={k: torch.zeros(n, dtype=torch.long, device=device) for k in colored},
            nan_sweep={k: torch.full((n,), -1, dtype=torch.long, device=device) for k in colored},
        )

    def _check_coloring(self, model: EnergyModel, colored: list[str]) -> None:
        if self.coloring is None or not isinstance(self.coloring, Mapping):
            if self.coloring is not None and len(colored) != 1:
                raise ValueError(
                    f"Gibbs(coloring=...) without block names needs exactly one block without conditional(), "
                    f"found {colored}; pass a dict {{block: coloring}}"
                )
            return
        unknown = [k for k in self.coloring if k not in colored]
        if unknown:
            raise ValueError(f"Gibbs(coloring=...) names block(s) {unknown}, but the coloured blocks are {colored}")

    def _structure(self, model: EnergyModel, name: str, state: Mapping[str, torch.Tensor]) -> Structure:
        coloring = self.coloring.get(name) if isinstance(self.coloring, Mapping) else self.coloring
        return structure(model, name, state, coloring)

    @staticmethod
    def _plan(model: EnergyModel, name: str, state: Mapping[str, torch.Tensor]) -> str:
        domain = model.variables[name]
        n = next(iter(state.values())).shape[0]
        try:
            with torch.no_grad():
                dist = model.conditional(name, state)
        except NotImplementedError:
            if domain.discrete:
                # The coloured update computes with energies: check one now, before any step.
                with torch.no_grad():
                    checked_energy(model, state)
                return "colored"
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

    def run_steps(
        self, model: EnergyModel, sampler_state: GibbsState, k: int, generator: torch.Generator | None = None
    ) -> GibbsState | None:
        """``k`` sweeps at once through the model's compiled sweeps (``RBM.gibbs_sweeps``), when
        every updated block is drawn from its conditional: the same chains as ``k`` calls of
        ``step`` (whose info is then empty), without Python's work per sweep. ``None`` when the
        model has no such path (then call ``step``)."""
        sweeps = getattr(model, "gibbs_sweeps", None)
        plan = sampler_state.plan
        if sweeps is None or not plan or any(how != "conditional" for how in plan.values()):
            return None
        drawn = sweeps(tuple(plan), sampler_state.state, k, generator)
        if drawn is None:
            return None
        state = dict(sampler_state.state)
        for name in plan:
            state[name] = drawn[name]
        return GibbsState(
            state,
            sampler_state.observed,
            plan,
            sampler_state.nan_count,
            sampler_state.nan_sweep,
            sampler_state.n_sweeps + k,
        )

    def step(self, model, sampler_state, generator=None, adapt=False):
        fast = self.run_steps(model, sampler_state, 1, generator)
        if fast is not None:
            return fast, {}
        state = dict(sampler_state.state)
        nan_count, nan_sweep = dict(sampler_state.nan_count), dict(sampler_state.nan_sweep)
        info = {}
        for name, how in sampler_state.plan.items():
            domain = model.variables[name]
            if how == "conditional":
                # the RBMs' fused draw (no distribution object, in place); None: not for this model
                fused = getattr(model, "draw_conditional", None)
                x = None if fused is None else fused(name, state, generator)
                state[name] = draw(model.conditional(name, state), domain, generator) if x is None else x
                continue
            s = self._structure(model, name, state)
            if s.rows is not None:
                state[name], bad = quadratic_sweep(model, domain, state[name], s, generator)
            else:
                state[name] = state[name].clone()
                bad = None
                for sites in s.colors:
                    count = update_color(model, name, domain, state, sites, s.affine, generator, s.fixed_batch)
                    bad = count if bad is None else bad + count
            if name not in nan_count:  # a state saved before these counters existed
                n = state[name].shape[0]
                nan_count[name] = torch.zeros(n, dtype=torch.long, device=state[name].device)
                nan_sweep[name] = torch.full_like(nan_count[name], -1)
            if bad is not None:  # None: the sweep could not meet a NaN (the counters stand)
                first = (nan_sweep[name] < 0) & (bad > 0)
                nan_sweep[name] = torch.where(first, sampler_state.n_sweeps, nan_sweep[name])
                nan_count[name] = nan_count[name] + bad
            info[f"nan_energy_{name}"] = nan_count[name]
            info[f"nan_sweep_{name}"] = nan_sweep[name]
        new = GibbsState(state, sampler_state.observed, sampler_state.plan, nan_count, nan_sweep, sampler_state.n_sweeps + 1)
        return new, info
