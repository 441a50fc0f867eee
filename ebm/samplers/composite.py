"""``Composite``: one sampler made of per-block samplers swept in turn (Metropolis-within-Gibbs)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch

from ebm.samplers.base import Sampler, SamplerState, check_sampler


@dataclass
class CompositeState(SamplerState):
    """The full state plus each part's own sampler state, in sweep order."""

    parts: list[SamplerState] = field(default_factory=list)


class Composite(Sampler):
    """Assign a sampler to each block (or group of blocks) and sweep them in turn.

    ``ebm.Composite({"h": ebm.Gibbs(), "v": ebm.Langevin(0.1)})`` draws ``h ~ p(h | v)``
    exactly, then moves ``v`` by MALA given the new ``h``: each part leaves the joint
    distribution invariant, so the sweep does too. A key may be a tuple of block names for
    a sampler that moves several blocks jointly (``{("x", "z"): ebm.HMC()}``). Blocks that
    are observed are skipped; every non-observed block must be covered.

    Each part is a copy of the given sampler restricted to its blocks (``blocks=``). Parts
    that cache energies or gradients (Langevin, HMC) refresh them when earlier parts moved
    the other blocks. Adaptation runs per part during burn-in.

    Info: each part's records prefixed by its blocks (``"v:accept_prob"``); ``"divergent"``
    is true when any part diverged; ``"energy"`` is passed on when the last part reports it.

    Args:
        samplers: ``{block or tuple of blocks: sampler}``, in sweep order.
    """

    def __init__(self, samplers: Mapping[str | tuple[str, ...], Sampler]):
        if not isinstance(samplers, Mapping) or not samplers:
            raise ValueError("Composite needs a non-empty dict {block name (or tuple of names): sampler}")
        self.parts: list[tuple[tuple[str, ...], Sampler]] = []
        seen: set[str] = set()
        for key, sampler in samplers.items():
            names = (key,) if isinstance(key, str) else tuple(key)
            check_sampler(sampler, f"Composite (for block(s) {names})")
            if seen & set(names):
                raise ValueError(f"block(s) {sorted(seen & set(names))} are assigned to more than one sampler")
            seen.update(names)
            part = copy.copy(sampler)
            part.blocks = names
            self.parts.append((names, part))
        self.needs_grad = any(part.needs_grad for _, part in self.parts)

    def _active(self, observed: frozenset[str]) -> list[tuple[tuple[str, ...], Sampler]]:
        return [(names, s) for names, s in self.parts if any(n not in observed for n in names)]

    def init(self, model, state, observed=(), generator=None) -> CompositeState:
        observed = frozenset(observed)
        unknown = [n for names, _ in self.parts for n in names if n not in model.variables]
        if unknown:
            raise ValueError(f"Composite was given unknown block(s) {unknown}; the model has {list(model.variables)}")
        covered = {n for names, _ in self.parts for n in names}
        missing = [k for k in model.variables if k not in observed and k not in covered]
        if missing:
            raise ValueError(f"Composite has no sampler for the non-observed block(s) {missing}")
        state = dict(state)
        parts = []
        for _, sampler in self._active(observed):
            part_state = sampler.init(model, state, observed, generator)
            parts.append(part_state)
        return CompositeState(state, observed, parts)

    def step(self, model, sampler_state, generator=None, adapt=False):
        state = sampler_state.state
        info: dict[str, torch.Tensor] = {}
        divergent = None
        energy = None
        parts = []
        active = self._active(sampler_state.observed)
        for i, ((names, sampler), part) in enumerate(zip(active, sampler_state.parts, strict=True)):
            if part.state is not state:
                part = replace(part, state=state)
                refresh = getattr(sampler, "refresh", None)
                if refresh is not None:
                    part = refresh(model, part)
            part, part_info = sampler.step(model, part, generator, adapt)
            state = part.state
            parts.append(part)
            label = ",".join(names)
            for key, value in part_info.items():
                if key == "divergent":
                    divergent = value if divergent is None else divergent | value
                elif key != "energy":
                    info[f"{label}:{key}"] = value
            energy = part_info.get("energy") if i == len(active) - 1 else None
        if divergent is not None:
            info["divergent"] = divergent
        if energy is not None:
            info["energy"] = energy
        return CompositeState(state, sampler_state.observed, parts), info

    def refresh(self, model, sampler_state: CompositeState) -> CompositeState:
        """Refresh every part's cached quantities (after the model's parameters changed)."""
        parts = []
        for (_, sampler), part in zip(self._active(sampler_state.observed), sampler_state.parts, strict=True):
            part = replace(part, state=sampler_state.state)
            refresh = getattr(sampler, "refresh", None)
            parts.append(refresh(model, part) if refresh is not None else part)
        return replace(sampler_state, parts=parts)

    def start_adaptation(self, model, sampler_state, n_steps):
        """Every part's warm-up, sized to the same ``n_steps`` (each part steps once per sweep)."""
        active = self._active(sampler_state.observed)
        parts = [s.start_adaptation(model, p, n_steps) for (_, s), p in zip(active, sampler_state.parts, strict=True)]
        return replace(sampler_state, parts=parts)

    def end_adaptation(self, model, sampler_state):
        active = self._active(sampler_state.observed)
        parts = [s.end_adaptation(model, p) for (_, s), p in zip(active, sampler_state.parts, strict=True)]
        return replace(sampler_state, parts=parts)

    def resume(self, model, sampler_state):
        """Every part resumes from its carried state, brought up to date with the full state."""
        s = sampler_state
        active = self._active(s.observed) if isinstance(s, CompositeState) else []
        if not isinstance(s, CompositeState) or len(s.parts) != len(active):
            raise TypeError(f"this Composite cannot continue from a {type(s).__name__} drawn with other parts")
        parts = [sampler.resume(model, replace(p, state=s.state)) for (_, sampler), p in zip(active, s.parts, strict=True)]
        return replace(s, parts=parts)

    def __repr__(self) -> str:
        inner = ", ".join(f"{names[0] if len(names) == 1 else names!r}: {s!r}" for names, s in self.parts)
        return f"Composite({{{inner}}})"
