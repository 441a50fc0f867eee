"""Shared machinery of gradient-based samplers (Langevin, HMC) over the latent ``Real`` blocks.

The sampled blocks are viewed as one flat position ``x`` of shape ``(n_chains, D)``; the
energy ``E(x)`` (nats) and its gradient ``∂E/∂x`` come from autograd with respect to ``x``
only, observed and other blocks held fixed. A proposal whose energy or gradient is NaN or
infinite is *divergent*: it is rejected and counted, and its values never reach the kept
state (selection is by ``torch.where``, row by row).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import torch

from ebm.model import EnergyModel, State
from ebm.samplers.adaptation import AdaptationState, Adapter, initial_step_size
from ebm.samplers.base import Sampler, SamplerState
from ebm.variables import Real

#: an energy error (nats) above which a transition counts as divergent (HMC, as in Stan and
#: Pyro) or, for unadjusted Langevin, as unstable
MAX_ENERGY_ERROR = 1000.0


@dataclass(frozen=True)
class Layout:
    """Where each sampled block sits in the flat position ``(n_chains, D)``."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    sizes: tuple[int, ...]

    @property
    def size(self) -> int:
        return sum(self.sizes)

    @property
    def described(self) -> str:
        return "block(s) " + ", ".join(f"'{k}'" for k in self.names)

    @classmethod
    def of(cls, model: EnergyModel, observed: Iterable[str], blocks: Iterable[str] | None, sampler: str) -> Layout:
        """The layout of the blocks a sampler updates: ``blocks`` (default: every non-observed
        block), which must all be ``Real``. Raises ``ValueError``/``TypeError`` otherwise."""
        observed = frozenset(observed)
        variables = model.variables
        if blocks is None:
            names = [k for k in variables if k not in observed]
        else:
            unknown = [k for k in blocks if k not in variables]
            if unknown:
                raise ValueError(f"{sampler} was given unknown block(s) {unknown}; the model has {list(variables)}")
            names = [k for k in variables if k in blocks and k not in observed]
        if not names:
            raise ValueError(f"{sampler} has no block to sample: every block it may update is observed")
        for name in names:
            if not isinstance(variables[name], Real):
                raise TypeError(
                    f"{sampler} samples Real blocks only; block '{name}' is {variables[name]!r}. "
                    f"Use ebm.Composite({{'{name}': ebm.Gibbs(), ...}}) to mix samplers."
                )
        shapes = tuple(variables[k].shape for k in names)
        return cls(tuple(names), shapes, tuple(math.prod(s) for s in shapes))

    def flatten(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(n_chains, D)`` position from the sampled blocks of ``state`` (no copy for one flat block)."""
        parts = [state[k].reshape(state[k].shape[0], -1) for k in self.names]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def unflatten(self, position: torch.Tensor, state: Mapping[str, torch.Tensor]) -> State:
        """``state`` with the sampled blocks replaced by views of ``position``."""
        out = dict(state)
        n = position.shape[0]
        for name, shape, part in zip(self.names, self.shapes, position.split(self.sizes, dim=1), strict=True):
            out[name] = part.reshape(n, *shape)
        return out


def energy_and_grad(
    model: EnergyModel, layout: Layout, state: Mapping[str, torch.Tensor], position: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``E`` of shape ``(n_chains,)`` and ``∂E/∂x`` of shape ``(n_chains, D)`` at ``position``.

    Autograd runs with respect to the position only: the model's parameters are not
    differentiated, so sampling inside a training step leaves their ``.grad`` untouched.
    Raises ``ValueError`` when the energy has no gradient path to the sampled blocks.
    """
    with torch.enable_grad():
        x = position.detach().requires_grad_(True)
        energy = model.energy(layout.unflatten(x, state))
        if not (isinstance(energy, torch.Tensor) and energy.requires_grad):
            raise ValueError(
                f"{type(model).__name__}.energy returned a tensor without autograd history, so it has no "
                f"gradient with respect to {layout.described}; {_AUTOGRAD_HINT}"
            )
        (grad,) = torch.autograd.grad(energy.sum(), x, allow_unused=True)
    if grad is None:
        raise ValueError(
            f"{type(model).__name__}.energy does not depend on {layout.described}; {_AUTOGRAD_HINT}, "
            "and give a gradient sampler only blocks the energy uses"
        )
    return energy.detach(), grad


_AUTOGRAD_HINT = (
    "Langevin and HMC differentiate the energy with autograd: compute it from the state with torch "
    "operations (no .detach(), .item() or numpy)"
)


def finite_rows(energy: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``(n_chains,)`` bool: the energy and every gradient component of a row are finite."""
    return torch.isfinite(energy) & torch.isfinite(grad).all(-1)


@dataclass
class GradientState(SamplerState):
    """State of a gradient-based sampler.

    Attributes:
        layout: where the sampled blocks sit in ``position``.
        position: ``(n_chains, D)`` flat sampled blocks.
        energy: ``(n_chains,)`` energy of the full state, nats.
        grad: ``(n_chains, D)`` ``∂E/∂x`` at ``position``.
        step_size: ``(n_chains, 1)`` per chain or ``(1, 1)`` shared.
        inv_mass: ``(n_chains, D)`` per chain or ``(1, D)`` shared diagonal inverse mass, or
            ``(1, D, D)`` dense.
        adaptation: warm-up bookkeeping (``None`` outside a burn-in: from ``start_adaptation``
            to ``end_adaptation``).
        mass_factor: dense only: ``(D, D)`` lower Cholesky factor ``L`` of ``M⁻¹ = L Lᵀ``.
        rescued: ``(n_chains,)`` times each chain was restarted from a healthy one during
            the last warm-up (``ebm.samplers.rescue``); ``None`` before any warm-up.
    """

    layout: Layout | None = None
    position: torch.Tensor | None = None
    energy: torch.Tensor | None = None
    grad: torch.Tensor | None = None
    step_size: torch.Tensor | None = None
    inv_mass: torch.Tensor | None = None
    adaptation: AdaptationState | None = None
    mass_factor: torch.Tensor | None = None
    rescued: torch.Tensor | None = None

    @property
    def dense(self) -> bool:
        return self.inv_mass.dim() == 3


class GradientSampler(Sampler):
    """Base of samplers that move the latent ``Real`` blocks along ``-∂E/∂x``.

    Subclasses implement ``transition`` (one proposal and its acceptance); this class does
    the layout, cached energies and gradients, warm-up adaptation and bookkeeping.
    """

    needs_grad = True
    #: acceptance probability the step-size adaptation aims for
    target_accept: float = 0.65

    def __init__(
        self,
        step_size: float,
        *,
        adapt_step_size: bool = True,
        adapt_mass: bool = True,
        per_chain: bool = False,
        mass_estimator: str = "gradient",
        dense_mass: bool | None = False,
        rescue: bool = True,
        accept_statistic: str = "mean",
        target_accept: float | None = None,
        blocks: Iterable[str] | None = None,
    ):
        self.step_size = initial_step_size(step_size)
        self.blocks = None if blocks is None else tuple(blocks)
        self.adapter = Adapter(
            self.target_accept if target_accept is None else target_accept,
            step_size=adapt_step_size,
            mass=adapt_mass,
            per_chain=per_chain,
            mass_estimator=mass_estimator,
            dense=dense_mass,
            rescue=rescue,
            statistic=accept_statistic,
        )

    def init(self, model, state, observed=(), generator=None) -> GradientState:
        observed = frozenset(observed)
        layout = Layout.of(model, observed, self.blocks, type(self).__name__)
        position = layout.flatten(state).detach()
        energy, grad = energy_and_grad(model, layout, state, position)
        n = position.shape[0]
        if energy.shape != (n,):
            raise ValueError(f"{type(model).__name__}.energy must return shape ({n},), got {tuple(energy.shape)}")
        bad = (~finite_rows(energy, grad)).nonzero().flatten()
        if bad.numel():
            raise ValueError(
                f"the initial energy or its gradient is NaN/inf for chain(s) {bad[:10].tolist()}"
                f"{' ...' if bad.numel() > 10 else ''}; start from a state where the energy is finite"
            )
        rows = n if self.adapter.per_chain else 1
        kw = {"dtype": position.dtype, "device": position.device}
        step_size = torch.full((rows, 1), self.step_size, **kw)
        factor = None
        if self.adapter.is_dense(layout.size):
            inv_mass = factor = torch.eye(layout.size, **kw)
            inv_mass = inv_mass.unsqueeze(0)
        else:
            inv_mass = torch.ones((rows, layout.size), **kw)
        state = layout.unflatten(position, state)
        return GradientState(state, observed, layout, position, energy, grad, step_size, inv_mass, mass_factor=factor)

    def refresh(self, model: EnergyModel, sampler_state: GradientState) -> GradientState:
        """Redo the cached energy and gradient from ``sampler_state.state``: call it after the
        model's parameters changed (a training step) or after another sampler of a composite
        moved the other blocks."""
        layout = sampler_state.layout
        state = sampler_state.state
        position = layout.flatten(state).detach()
        energy, grad = energy_and_grad(model, layout, state, position)
        return replace(sampler_state, position=position, energy=energy, grad=grad)

    def transition(
        self, model: EnergyModel, s: GradientState, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Propose and accept/reject. Returns ``(position, energy, grad, info)`` of the next
        state; ``info`` holds at least ``accept_prob`` and ``divergent``."""
        raise NotImplementedError

    def step(self, model, sampler_state, generator=None, adapt=False):
        s = sampler_state
        position, energy, grad, info = self.transition(model, s, generator)
        step_size, inv_mass, factor = s.step_size, s.inv_mass, s.mass_factor
        info["energy"] = energy
        info["step_size"] = s.step_size.reshape(-1).expand(position.shape[0])
        if adapt and s.adaptation is not None:
            scale = inv_mass[0].diagonal() if s.dense else inv_mass
            jump = ((position - s.position).square() / scale).sum(-1)
            step_size, inv_mass, restart = self.adapter.update(
                s.adaptation, info["accept_prob"], position, grad, step_size, inv_mass, generator, jump
            )
            if restart is not None:
                # warm-up only: stuck chains continue from healthy ones (ebm.samplers.rescue)
                position = position[restart]
                energy, grad = energy_and_grad(model, s.layout, s.state, position)
            if inv_mass is not s.inv_mass and inv_mass.dim() == 3:
                factor = torch.linalg.cholesky(inv_mass[0])
        new = replace(
            s,
            state=s.layout.unflatten(position, s.state),
            position=position,
            energy=energy,
            grad=grad,
            step_size=step_size,
            inv_mass=inv_mass,
            mass_factor=factor,
        )
        return new, info

    def start_adaptation(self, model, sampler_state, n_steps):
        """Warm-up for ``n_steps`` steps (``ebm.samplers.adaptation``), from the state's
        current step size and mass."""
        s = sampler_state
        n = s.position.shape[0]
        # chains clamped to different data rows have targets of their own: never swap them
        shared_target = all(bool((s.state[k] == s.state[k][:1]).all()) for k in s.observed)
        adaptation = self.adapter.start(s.step_size, n_steps, n, rescue=shared_target, dense=s.dense)
        return replace(s, adaptation=adaptation)

    def end_adaptation(self, model, sampler_state):
        """Freeze: the step size becomes the dual-averaging average of the terminal buffer."""
        s = sampler_state
        if s.adaptation is None:
            return s
        step_size = self.adapter.finish(s.adaptation, s.step_size)
        return replace(s, step_size=step_size, adaptation=None, rescued=s.adaptation.rescued)

    def resume(self, model, sampler_state):
        """Continue from a carried state: its layout must be this sampler's and its step size
        and mass shared or per chain as this sampler's ``per_chain`` says; energies and
        gradients are recomputed for ``model``."""
        s = sampler_state
        name = type(self).__name__
        if not isinstance(s, GradientState):
            raise TypeError(f"{name} cannot continue from a {type(s).__name__} (chains drawn by another kind of sampler)")
        layout = Layout.of(model, s.observed, self.blocks, name)
        if layout != s.layout:
            raise ValueError(f"{name} samples {layout.described} but the carried state has {s.layout.described}")
        n = s.position.shape[0]
        rows = n if self.adapter.per_chain else 1
        if s.step_size.shape[0] != rows:
            kind = "per chain" if self.adapter.per_chain else "shared"
            raise ValueError(
                f"{name} tunes a {kind} step size but the carried state has {s.step_size.shape[0]} for {n} chains"
            )
        if s.dense != self.adapter.is_dense(layout.size):
            kind = "dense" if not s.dense else "diagonal"
            raise ValueError(f"{name} uses a {kind} mass but the carried state has the other kind: set dense_mass to match")
        return self.refresh(model, replace(s, adaptation=None))

    def normal(self, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Standard normal noise shaped like ``like``."""
        return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)

    @staticmethod
    def metropolis_accept(
        log_ratio: torch.Tensor, finite: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Metropolis-Hastings decision from ``log_ratio = log [π(x') q(x|x') / π(x) q(x'|x)]``.

        Non-finite proposals get acceptance probability 0. Returns ``(accept_prob, accepted)``,
        both ``(n_chains,)``.
        """
        log_ratio = torch.where(finite & ~torch.isnan(log_ratio), log_ratio, -math.inf)
        accept_prob = log_ratio.clamp(max=0.0).exp()
        u = torch.rand(log_ratio.shape, generator=generator, dtype=log_ratio.dtype, device=log_ratio.device)
        return accept_prob, u < accept_prob


def select(accepted: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Rows of ``new`` where ``accepted`` (``(n_chains,)``), else of ``old``."""
    mask = accepted.reshape(-1, *([1] * (new.dim() - 1)))
    return torch.where(mask, new, old)
