"""Hamiltonian Monte Carlo with a diagonal or dense mass matrix, batched over chains, with a
fixed number of leapfrog steps or a trajectory length tuned across chains (ChEES)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace

import torch

from ebm.samplers.gradient import (
    MAX_ENERGY_ERROR,
    GradientSampler,
    GradientState,
    energy_and_grad,
    finite_rows,
    select,
)
from ebm.samplers.rescue import CHECK_EVERY
from ebm.samplers.trajectory import TrajectoryState, chees_gradient, leapfrog_count

Potential = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def leapfrog(
    potential: Potential,
    position: torch.Tensor,
    momentum: torch.Tensor,
    grad: torch.Tensor,
    step_size: torch.Tensor | float,
    inv_mass: torch.Tensor | float,
    n_steps: int,
    tempering: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n_steps`` leapfrog (velocity Verlet) steps of ``H(x, p) = E(x) + ½ pᵀ M⁻¹ p``.

    Args:
        potential: ``x -> (E(x), ∂E/∂x)`` with shapes ``(n_chains,)`` and ``(n_chains, D)``.
        position, momentum, grad: ``(n_chains, D)``; ``grad`` is ``∂E/∂x`` at ``position``.
        step_size: ``ε``, broadcastable to ``(n_chains, 1)``.
        inv_mass: diagonal ``M⁻¹``, broadcastable to ``(n_chains, D)``.
        n_steps: number of leapfrog steps.
        tempering: ``τ ≥ 1``, a tempered trajectory (Neal 2011, "MCMC using Hamiltonian
            dynamics", section 5.7): the momentum is multiplied by ``c`` before and after each
            leapfrog step of the first half and divided by ``c`` in the second half (the middle
            step of an odd count: multiplied before, divided after), with ``c = τ^(1 / 2n)``
            for ``n = n_steps``: ``n`` scalings up to the middle multiply the kinetic energy
            by ``τ`` there. The scalings cancel, so the map keeps volume and stays reversible
            (the step ``k`` from the end scales by the inverse of step ``k``); the trajectory is
            hotter in the middle and cools back, so ``H`` is not conserved along it.

    Returns:
        ``(position, momentum, energy, grad)`` at the end of the trajectory. The map is
        volume-preserving and reversible: negating the final momentum and integrating again
        returns to the start, up to rounding.
    """
    half = 0.5 * step_size
    velocity_scale = step_size * inv_mass
    if tempering != 1.0:
        return _tempered_leapfrog(potential, position, momentum, grad, half, velocity_scale, n_steps, tempering)
    p = momentum - half * grad
    x = position
    energy = None
    for i in range(n_steps):
        x = torch.addcmul(x, velocity_scale, p)
        energy, grad = potential(x)
        p = p - (half if i == n_steps - 1 else step_size) * grad
    return x, p, energy, grad


def _tempered_leapfrog(potential, x, p, grad, half, velocity_scale, n_steps: int, tempering: float):
    """``leapfrog`` with Neal's tempering: each step is ``scale · kick · drift · kick · scale``,
    scaled up in the first half and down in the second (see ``leapfrog``)."""
    c = tempering ** (0.5 / n_steps)  # n_steps scalings by c up to the middle: momentum x sqrt(τ)
    energy = None
    for i in range(n_steps):
        before = c if 2 * i < n_steps else 1 / c  # the middle step of an odd count: up before ...
        after = c if 2 * i + 1 < n_steps else 1 / c  # ... and down after
        p = (p * before) - half * grad
        x = torch.addcmul(x, velocity_scale, p)
        energy, grad = potential(x)
        p = (p - half * grad) * after
    return x, p, energy, grad


@dataclass
class HMCState(GradientState):
    """State of ``HMC``: a gradient sampler's, plus the trajectory of the adaptive mode.

    Attributes:
        trajectory_length: ``(1, 1)`` tuned length ``T = leapfrog_scale · ε`` (time units, for
            the record), ``None`` with a fixed
            ``n_leapfrog``.
        leapfrog_scale: ``T / ε`` as a Python float (host copy for the leapfrog count).
        n_transitions: transitions taken (index of the jitter sequence).
        trajectory: ChEES's optimiser during warm-up, ``None`` otherwise.
    """

    trajectory_length: torch.Tensor | None = None
    leapfrog_scale: float = 0.0
    n_transitions: int = 0
    trajectory: TrajectoryState | None = None


#: leapfrog steps of the initial trajectory length ``T = INITIAL_LEAPFROG · ε`` (adaptive mode)
INITIAL_LEAPFROG = 10
#: with ``step_range > 1``, the step-size statistic floors each chain's acceptance here
#: (``Adapter.accept_floor``)
RANGE_ACCEPT_FLOOR = 0.1
_CHEES_KEY = "_chees_gradient"


class HMC(GradientSampler):
    """Hamiltonian Monte Carlo on the latent ``Real`` blocks, all chains batched on dim 0.

    Each step draws a momentum ``p ~ N(0, M)``, runs leapfrog steps of size ``ε``
    (``leapfrog``) and accepts the end point with probability ``min(1, exp(−ΔH))``,
    ``ΔH = H(x', p') − H(x, p)`` (nats).

    Trajectory: ``n_leapfrog`` fixed steps, or (``n_leapfrog=None``, the default) a
    trajectory length ``T`` tuned during burn-in from all chains by ChEES, each transition
    running ``ceil(u_t T / ε)`` steps with a low-discrepancy ``u_t`` in (0, 1)
    (``ebm.samplers.trajectory``). ``T`` starts at ``10 ε``.

    During burn-in (``ebm.sample(..., burn_in=...)``) ``ε`` is tuned by dual averaging
    towards ``target_accept`` (of the harmonic mean acceptance over chains with a tuned
    trajectory, of the mean with a fixed ``n_leapfrog``; ``ebm.samplers.adaptation``) and
    the inverse mass ``M⁻¹`` (diagonal, or dense with ``dense_mass=True``) from the burn-in
    draws; both on by default and shared by all chains
    (``per_chain=True``: one per chain). Chains stuck during burn-in are restarted from
    healthy ones (``ebm.samplers.rescue``; warm-up only, so the draws stay exact).
    Trajectories with a NaN/inf energy or gradient, or ``ΔH > 1000``, are divergent: they
    are rejected and flagged in ``info["divergent"]``.

    Args:
        step_size: initial leapfrog step ``ε``.
        n_leapfrog: leapfrog steps per trajectory (one gradient evaluation each), or
            ``None`` to tune the trajectory length (shared tuning only).
        jitter: each chain's step size is drawn uniformly from ``ε (1 ± jitter)`` at every
            step (Neal 2011, section 5.4.2.2). A fixed ``ε n_leapfrog`` can be close to a
            period of the target's dynamics, which makes draws nearly repeat and acceptance
            a ragged function of ``ε``; randomising it removes both. 0 turns it off.
        step_range: ``k > 1`` draws each chain's step at every transition log-uniformly from
            ``[ε / k, ε]`` instead (independent of the state, so every draw is an exact HMC
            kernel), and the shared step-size statistic floors each chain's acceptance at
            ``RANGE_ACCEPT_FLOOR``: chains where the posterior is much narrower than elsewhere
            (a funnel's neck) accept the small steps they draw, and stop pulling ``ε`` down
            for all. Off (1) by default; see docs/many-chains.md for what it buys on the
            centred eight schools.
        refreshes: HMC transitions per step, each with a fresh momentum, sharing the step's
            leapfrog steps (``ceil(n / refreshes)`` each): a composition of exact kernels, so
            still exact. Where the energy, not the distance, limits mixing (a low E-BFMI: the
            potential's spread over the posterior is many times the ``sqrt(D / 2)`` nats a
            momentum draw can change it by, as in a centred hierarchical model), mixing per
            step grows with the number of momentum draws. Info per step: ``accept_prob`` is the
            mean over the transitions, ``accepted`` and ``divergent`` whether any was,
            ``n_leapfrog`` the total, ``energy_error`` the last transition's.
        tempering: ``τ > 1`` runs tempered trajectories (Neal 2011, section 5.7; ``leapfrog``):
            the momentum is scaled up step by step in the first half of each trajectory, so
            that the kinetic energy is ``τ`` times larger at its middle, and back down in the
            second half: still an exact HMC kernel (volume-preserving and reversible), and a
            transition can change the energy by more than one momentum draw does. After
            warm-up only: warm-up tunes ``ε`` and ``T`` on plain trajectories (a tempered one's
            energy error does not vanish as ``ε -> 0``, so dual averaging would shrink ``ε``
            for nothing). Off (1) by default; it does not help the centred eight schools (see
            docs/many-chains.md).
        max_leapfrog: cap on the leapfrog steps of one transition (adaptive mode).
        adapt_step_size, adapt_mass, per_chain, mass_estimator: warm-up tuning; see
            ``ebm.samplers.adaptation``.
        dense_mass: estimate a dense inverse mass across chains (Stan's ``dense_e``). Default:
            dense for up to ``DENSE_MAX_DIM`` (128) sampled coordinates when the trajectory
            is tuned (``n_leapfrog=None``), diagonal otherwise.
        rescue: restart stuck chains during warm-up.
        target_accept: default 0.65 (Beskos et al. 2013).
        blocks: the blocks to update (default: all non-observed ones).

    Info per step, each ``(n_chains,)``: ``accept_prob``, ``accepted``, ``energy_error``
    (``ΔH``), ``divergent``, ``energy``, ``step_size``, ``n_leapfrog``, ``hamiltonian`` (``H``
    at the kept point, nats: the end of the trajectory if accepted, else the start with the
    fresh momentum; with ``refreshes``, the last transition's), from which the summary and
    ``ebm.sample``'s check compute each chain's E-BFMI (``ebm.diagnostics.e_bfmi``).
    """

    target_accept = 0.65

    def __init__(
        self,
        step_size: float = 0.1,
        n_leapfrog: int | None = None,
        *,
        jitter: float = 0.2,
        step_range: float = 1.0,
        refreshes: int = 1,
        tempering: float = 1.0,
        max_leapfrog: int = 256,
        adapt_step_size: bool = True,
        adapt_mass: bool = True,
        per_chain: bool = False,
        mass_estimator: str = "gradient",
        dense_mass: bool | None = None,
        rescue: bool = True,
        target_accept: float | None = None,
        blocks: Iterable[str] | None = None,
    ):
        if n_leapfrog is not None and (not isinstance(n_leapfrog, int) or n_leapfrog < 1):
            raise ValueError(f"n_leapfrog must be a positive integer or None (tuned), got {n_leapfrog!r}")
        if n_leapfrog is None and per_chain:
            raise ValueError("a tuned trajectory length is shared by all chains: give n_leapfrog with per_chain=True")
        if not isinstance(max_leapfrog, int) or max_leapfrog < 1:
            raise ValueError(f"max_leapfrog must be a positive integer, got {max_leapfrog!r}")
        super().__init__(
            step_size,
            adapt_step_size=adapt_step_size,
            adapt_mass=adapt_mass,
            per_chain=per_chain,
            mass_estimator=mass_estimator,
            dense_mass=(None if n_leapfrog is None else False) if dense_mass is None else dense_mass,
            rescue=rescue,
            accept_statistic="harmonic" if n_leapfrog is None else "mean",
            target_accept=target_accept,
            blocks=blocks,
        )
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must lie in [0, 1), got {jitter!r}")
        if isinstance(step_range, bool) or not isinstance(step_range, (int, float)) or not 1.0 <= step_range < math.inf:
            raise ValueError(f"step_range must be a finite number >= 1 (1: no log-uniform jitter), got {step_range!r}")
        self.step_range = float(step_range)
        if self.step_range > 1.0:
            # a chain deep in a funnel's neck draws the small steps it needs now and then: it
            # must not pull the whole range down to its own scale
            self.adapter.accept_floor = RANGE_ACCEPT_FLOOR
        self.n_leapfrog = n_leapfrog
        self.max_leapfrog = max_leapfrog
        self.jitter = float(jitter)
        if isinstance(refreshes, bool) or not isinstance(refreshes, int) or refreshes < 1:
            raise ValueError(f"refreshes must be a positive integer, got {refreshes!r}")
        self.refreshes = refreshes
        if isinstance(tempering, bool) or not isinstance(tempering, (int, float)) or not 1.0 <= tempering < math.inf:
            raise ValueError(f"tempering must be a finite number >= 1 (1: no tempering), got {tempering!r}")
        self.tempering = float(tempering)

    def init(self, model, state, observed=(), generator=None) -> HMCState:
        s = _as_hmc_state(super().init(model, state, observed, generator))
        if self.n_leapfrog is None:
            s = replace(s, trajectory_length=INITIAL_LEAPFROG * s.step_size, leapfrog_scale=float(INITIAL_LEAPFROG))
        return s

    def _count(self, s: HMCState) -> int:
        if self.n_leapfrog is not None:
            return self.n_leapfrog
        return leapfrog_count(s.n_transitions, s.leapfrog_scale, self.max_leapfrog)

    def transition(self, model, s: HMCState, generator):
        n_leapfrog = self._count(s)
        x, energy, grad = s.position, s.energy, s.grad
        if self.refreshes == 1:
            return self._move(model, s, x, energy, grad, generator, n_leapfrog)
        # one step = `refreshes` HMC transitions sharing the leapfrog budget, each with a fresh
        # momentum: the kinetic energy is redrawn `refreshes` times per kept draw
        part = max(1, math.ceil(n_leapfrog / self.refreshes))
        infos = []
        for _ in range(self.refreshes):
            x, energy, grad, info = self._move(model, s, x, energy, grad, generator, part)
            infos.append(info)
        info = {
            "accept_prob": torch.stack([i["accept_prob"] for i in infos]).mean(0),
            "accepted": torch.stack([i["accepted"] for i in infos]).any(0),
            "energy_error": infos[-1]["energy_error"],
            "hamiltonian": infos[-1]["hamiltonian"],
            "divergent": torch.stack([i["divergent"] for i in infos]).any(0),
            "n_leapfrog": torch.stack([i["n_leapfrog"] for i in infos]).sum(0),
        }
        if _CHEES_KEY in infos[0]:
            info[_CHEES_KEY] = torch.stack([i[_CHEES_KEY] for i in infos]).mean(0)
        return x, energy, grad, info

    def _move(self, model, s: HMCState, x, energy, grad, generator, n_leapfrog: int):
        noise = self.normal(x, generator)
        # warm-up tunes ε and T for plain trajectories: a tempered one's energy error does not
        # vanish as ε -> 0, so dual averaging would shrink ε towards 0 for nothing
        tempering = self.tempering if s.adaptation is None else 1.0
        step_size = s.step_size
        if self.step_range > 1.0:
            # log-uniform over [ε / step_range, ε], drawn per chain, independent of the state
            u = torch.rand((x.shape[0], 1), generator=generator, dtype=x.dtype, device=x.device)
            step_size = step_size * torch.exp(-math.log(self.step_range) * u)
        elif self.jitter:
            u = torch.rand((x.shape[0], 1), generator=generator, dtype=x.dtype, device=x.device)
            step_size = step_size * (1 + self.jitter * (2 * u - 1))

        if s.dense:
            # integrate in whitened coordinates x = x0 + L z, where the mass is the identity
            factor = s.mass_factor
            last = {}

            def potential(z):
                e, g = energy_and_grad(model, s.layout, s.state, x + z @ factor.T)
                last["grad"] = g
                return e, g @ factor

            origin = torch.zeros_like(x)
            z, new_p, new_energy, _ = leapfrog(
                potential, origin, noise, grad @ factor, step_size, 1.0, n_leapfrog, tempering
            )
            new_x, new_grad = x + z @ factor.T, last["grad"]
            new_square = new_p.square().sum(-1)
        else:
            momentum = noise / s.inv_mass.sqrt()

            def potential(position):
                return energy_and_grad(model, s.layout, s.state, position)

            new_x, new_p, new_energy, new_grad = leapfrog(
                potential, x, momentum, grad, step_size, s.inv_mass, n_leapfrog, tempering
            )
            new_square = (new_p.square() * s.inv_mass).sum(-1)
        square = noise.square().sum(-1)  # pᵀ M⁻¹ p of the fresh momentum p = M^½ noise
        energy_error = new_energy - energy + 0.5 * (new_square - square)
        finite = finite_rows(new_energy, new_grad)
        accept_prob, accepted = self.metropolis_accept(-energy_error, finite, generator)
        divergent = ~finite | (energy_error > MAX_ENERGY_ERROR)
        info = {
            "accept_prob": accept_prob,
            "accepted": accepted,
            "energy_error": energy_error,
            "divergent": divergent,
            "n_leapfrog": torch.full_like(accept_prob, n_leapfrog),
            # H at the kept point (Stan's energy__): its changes from draw to draw give E-BFMI
            "hamiltonian": torch.where(accepted, new_energy + 0.5 * new_square, energy + 0.5 * square),
        }
        if s.trajectory is not None and s.adaptation is not None:
            if s.dense:
                start = torch.linalg.solve_triangular(s.mass_factor, x.T, upper=False).T
                end, velocity = start + z, new_p
            else:
                scale = s.inv_mass.sqrt()
                start, end, velocity = x / scale, new_x / scale, new_p * scale
            usable = ~divergent & s.adaptation.healthy
            # the integration time actually run (d time / d log T for the continuous count uT/ε):
            # each chain's own with a log-uniform step, else the nominal one
            jittered = n_leapfrog * (step_size.reshape(-1) if self.step_range > 1.0 else s.step_size.reshape(()))
            info[_CHEES_KEY] = chees_gradient(start, end, velocity, accept_prob, usable, jittered)
        return select(accepted, new_x, x), select(accepted, new_energy, energy), select(accepted, new_grad, grad), info

    def step(self, model, sampler_state, generator=None, adapt=False):
        s = sampler_state
        new, info = super().step(model, s, generator, adapt)
        gradient = info.pop(_CHEES_KEY, None)
        updates = {"n_transitions": s.n_transitions + 1}
        if adapt and gradient is not None:
            steps = self._clip(s.trajectory.update(gradient, float(self.max_leapfrog)).reshape(1, 1))
            updates["trajectory_length"] = steps * new.step_size
            if s.trajectory.n_updates % CHECK_EVERY == 0:
                # the leapfrog count is a host integer: read T / ε every CHECK_EVERY steps only
                updates["leapfrog_scale"] = steps.item()
        return replace(new, **updates), info

    def _clip(self, steps: torch.Tensor) -> torch.Tensor:
        return steps.clamp(1.0, float(self.max_leapfrog))

    def start_adaptation(self, model, sampler_state, n_steps):
        """Warm-up of ``ε`` and the mass (``GradientSampler``), and of ``T`` by ChEES when
        ``n_leapfrog`` is ``None``."""
        s = super().start_adaptation(model, sampler_state, n_steps)
        if self.n_leapfrog is None and s.adaptation is not None:
            steps = torch.full((), s.leapfrog_scale, dtype=s.step_size.dtype, device=s.step_size.device)
            s = replace(s, trajectory=TrajectoryState.start(steps))
        return s

    def end_adaptation(self, model, sampler_state):
        """Freeze ``ε``, the mass and ``T`` (its moving average), and the leapfrog scale ``T / ε``."""
        tuned = sampler_state.trajectory is not None
        s = super().end_adaptation(model, sampler_state)
        if not tuned:
            return s
        steps = self._clip(s.trajectory.log_average.exp().reshape(1, 1))
        return replace(s, trajectory_length=steps * s.step_size, leapfrog_scale=steps.item(), trajectory=None)

    def resume(self, model, sampler_state):
        s = super().resume(model, sampler_state)
        if not isinstance(s, HMCState):
            s = _as_hmc_state(s)
        if self.n_leapfrog is None and s.trajectory_length is None:
            s = replace(s, trajectory_length=INITIAL_LEAPFROG * s.step_size, leapfrog_scale=float(INITIAL_LEAPFROG))
        return replace(s, trajectory=None)


def _as_hmc_state(s: GradientState) -> HMCState:
    return HMCState(**{f.name: getattr(s, f.name) for f in fields(GradientState)})
