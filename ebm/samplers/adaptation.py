"""Warm-up tuning of a step size and a diagonal mass for gradient-based samplers, batched
over chains, on a schedule built for the burn-in length (Stan's windowed adaptation).

Schedule (``warmup_schedule``), for a burn-in of ``n`` steps, as in Stan and Pyro's
``WarmupAdapter``: an initial buffer of ``init_buffer`` steps tunes the step size only;
then mass windows (``first_window`` steps, doubling) collect draws, the last one stretched
so that it ends exactly where a terminal buffer of ``term_buffer`` steps begins; the
terminal buffer tunes the step size only, for the final mass. At the end of each mass
window the inverse mass is re-estimated and dual averaging restarts around ``10 ε`` (the
current step ``ε``). The step size used after warm-up is the dual-averaging *average*
since the last restart, i.e. over the terminal buffer. Burn-ins shorter than
``init_buffer + first_window + term_buffer`` tune the step size only (one dual-averaging
run over the whole burn-in; too few draws for a mass estimate followed by a step size
tuned to it). Burn-ins shorter than ``min_steps`` (20, Stan's and Pyro's threshold for
windowless warm-up) tune nothing: a dual-averaging average of a few iterates, which start
at ``10 ε``, is worse than the given step (one step on a standard Gaussian gives a step
that makes every HMC transition diverge). Pyro's ``WarmupAdapter`` itself does not fit:
it adapts one chain and reads every acceptance on the host; its short-burn-in rule
(15% / 75% / 10%) leaves a terminal buffer of a few steps, whose average is far off.

Step size: dual averaging (Hoffman & Gelman 2014, section 3.2) with
``pyro.ops.dual_averaging.DualAveraging``. Its update is elementwise, so feeding it the
statistic ``target - accept_prob`` as a ``(n_chains, 1)`` tensor tunes one step size per
chain, and feeding ``target - mean(accept_prob)`` as a ``(1, 1)`` tensor tunes one shared
step size; either way no value leaves the device.

Mass: running moments (``Welford``) of the ``(n_chains, D)`` positions (and gradients) of
a window, per chain. Two estimators:

- ``"variance"``: the posterior variance of each coordinate (Stan's choice).
- ``"gradient"``: ``sqrt(Var[x] / Var[∂E/∂x])`` (Tran, Kleppe et al. 2024). For a Gaussian
  target ``∂E/∂x = Σ⁻¹(x − μ)`` coordinatewise, so the ratio equals the variance whatever
  the distribution of the chains: it is right even while chains are still far from
  equilibrium, which makes burn-in on ill-conditioned targets much shorter.

Shared estimates pool all chains (within-chain plus between-chain spread); per-chain ones
use each chain's own draws. Both get Stan's regularisation towards ``1e-3``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pyro.ops.dual_averaging import DualAveraging

MASS_ESTIMATORS = ("variance", "gradient")


def warmup_schedule(n_steps: int, init_buffer: int, first_window: int, term_buffer: int) -> tuple[int, ...]:
    """The steps (counted from 1) after which the mass is re-estimated, for a burn-in of
    ``n_steps``: ends of the doubling windows that start after ``init_buffer`` steps, the
    last stretched to end at ``n_steps - term_buffer`` (Stan's rule: a window is stretched
    to the end when the doubled next one would not fit). Empty when
    ``n_steps < init_buffer + first_window + term_buffer``.
    """
    if n_steps < init_buffer + first_window + term_buffer:
        return ()
    end = n_steps - term_buffer
    ends, start, size = [], init_buffer, first_window
    while start < end:
        stop = start + size if start + 3 * size <= end else end
        ends.append(stop)
        start, size = stop, 2 * size
    return tuple(ends)


@dataclass
class Welford:
    """Running per-row mean and sum of squared deviations of ``(rows, D)`` batches
    (Welford's update, elementwise), for the mass estimate.

    Attributes:
        count: batches seen.
        mean, m2: ``(rows, D)`` running mean and ``Σ (x − mean)²`` (``None`` before the first).
    """

    count: int = 0
    mean: torch.Tensor | None = None
    m2: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        self.count += 1
        if self.mean is None:
            self.mean, self.m2 = x.clone(), torch.zeros_like(x)
            return
        delta = x - self.mean
        self.mean = self.mean + delta / self.count
        self.m2 = self.m2 + delta * (x - self.mean)

    def reset(self) -> None:
        self.count, self.mean, self.m2 = 0, None, None

    def variance(self, pooled: bool) -> torch.Tensor:
        """Regularised variance: per row ``(rows, D)``, or ``(1, D)`` over all rows and draws
        (Chan et al.'s parallel combination ``M2 = Σ_r M2_r + n Σ_r (mean_r − mean)²``).
        Stan's shrinkage ``n/(n+5) · var + 1e-3 · 5/(n+5)`` over the ``n`` draws used."""
        if self.count < 2:
            raise RuntimeError("a mass window needs at least 2 draws")
        m2, n = self.m2, self.count
        if pooled:
            mean = self.mean.mean(0, keepdim=True)
            m2 = m2.sum(0, keepdim=True) + n * (self.mean - mean).pow(2).sum(0, keepdim=True)
            n = n * self.mean.shape[0]
        variance = m2 / (n - 1)
        return (n / (n + 5.0)) * variance + 1e-3 * (5.0 / (n + 5.0))


@dataclass
class AdaptationState:
    """Warm-up bookkeeping carried in a sampler's state (mutated in place by ``Adapter``).

    Attributes:
        dual: the dual-averaging scheme on ``log step_size`` (since its last restart).
        welford_x, welford_g: running moments of positions and energy gradients in the
            current mass window.
        window_ends: the steps after which the mass is re-estimated (``warmup_schedule``).
        n_steps: adaptation steps taken so far.
        dual_steps: dual-averaging updates since its last restart.
    """

    dual: DualAveraging
    welford_x: Welford
    welford_g: Welford
    window_ends: tuple[int, ...] = ()
    n_steps: int = 0
    dual_steps: int = 0


class Adapter:
    """Warm-up tuning of a step size (dual averaging) and a diagonal inverse mass (Welford).

    Args:
        target_accept: acceptance probability dual averaging aims for (0.574 MALA, 0.65 HMC).
        step_size: tune the step size.
        mass: tune the diagonal inverse mass.
        per_chain: one step size and mass per chain instead of values shared by all chains.
        mass_estimator: ``"gradient"`` or ``"variance"`` (see the module docstring).
        init_buffer: steps of step-size-only tuning before the first mass window.
        first_window: length of the first mass window; later windows double.
        term_buffer: steps of step-size-only tuning after the last mass window.
        min_steps: shortest burn-in that tunes anything.
    """

    def __init__(
        self,
        target_accept: float,
        step_size: bool = True,
        mass: bool = True,
        per_chain: bool = False,
        mass_estimator: str = "gradient",
        init_buffer: int = 25,
        first_window: int = 25,
        term_buffer: int = 50,
        min_steps: int = 20,
    ):
        if not 0.0 < target_accept < 1.0:
            raise ValueError(f"target_accept must lie in (0, 1), got {target_accept!r}")
        if mass_estimator not in MASS_ESTIMATORS:
            raise ValueError(f"mass_estimator must be one of {MASS_ESTIMATORS}, got {mass_estimator!r}")
        if init_buffer < 0 or first_window < 2 or term_buffer < 1:
            raise ValueError("init_buffer must be >= 0, first_window >= 2 and term_buffer >= 1")
        self.target_accept = target_accept
        self.step_size = step_size
        self.mass = mass
        self.per_chain = per_chain
        self.mass_estimator = mass_estimator
        self.init_buffer = init_buffer
        self.first_window = first_window
        self.term_buffer = term_buffer
        self.min_steps = min_steps

    @property
    def active(self) -> bool:
        return self.step_size or self.mass

    def schedule(self, n_steps: int) -> tuple[int, ...]:
        """The mass-window ends for a burn-in of ``n_steps`` (empty when mass is not tuned)."""
        if not self.mass:
            return ()
        return warmup_schedule(n_steps, self.init_buffer, self.first_window, self.term_buffer)

    def start(self, step_size: torch.Tensor, n_steps: int) -> AdaptationState | None:
        """Bookkeeping for a burn-in of ``n_steps`` steps starting from ``step_size``
        (``None``: nothing to tune); dual averaging is centred on ``log(10 · step_size)``."""
        if not self.active or n_steps < max(1, self.min_steps):
            return None
        state = AdaptationState(DualAveraging(), Welford(), Welford(), self.schedule(n_steps))
        self._restart_dual(state, step_size)
        return state

    @staticmethod
    def _restart_dual(state: AdaptationState, step_size: torch.Tensor) -> None:
        state.dual.prox_center = torch.log(10 * step_size)
        state.dual.reset()
        state.dual_steps = 0

    def _collecting(self, state: AdaptationState) -> bool:
        """Whether the step just taken (``state.n_steps``) falls in a mass window."""
        ends = state.window_ends
        if not ends:
            return False
        return self.init_buffer < state.n_steps <= ends[-1]

    def update(
        self,
        state: AdaptationState,
        accept_prob: torch.Tensor,
        position: torch.Tensor,
        grad: torch.Tensor,
        step_size: torch.Tensor,
        inv_mass: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One warm-up update after a transition.

        Args:
            accept_prob: ``(n_chains,)`` acceptance probabilities of the transition.
            position, grad: ``(n_chains, D)`` state and energy gradient after it.
            step_size: ``(n_chains, 1)`` or ``(1, 1)``; inv_mass: ``(n_chains, D)`` or ``(1, D)``.

        Returns:
            The new ``(step_size, inv_mass)``, same shapes.
        """
        state.n_steps += 1
        if self.step_size:
            accept = accept_prob.unsqueeze(-1) if self.per_chain else accept_prob.mean().reshape(1, 1)
            state.dual.step(self.target_accept - accept)
            state.dual_steps += 1
            log_step, _ = state.dual.get_state()
            step_size = torch.exp(log_step)
        if self._collecting(state):
            state.welford_x.update(position.detach())
            if self.mass_estimator == "gradient":
                state.welford_g.update(grad.detach())
            if state.n_steps in state.window_ends:
                inv_mass = self._estimate(state)
                state.welford_x.reset()
                state.welford_g.reset()
                if self.step_size:
                    self._restart_dual(state, step_size)
        return step_size, inv_mass

    def _estimate(self, state: AdaptationState) -> torch.Tensor:
        pooled = not self.per_chain
        var_x = state.welford_x.variance(pooled)
        if self.mass_estimator == "variance":
            return var_x
        return (var_x / state.welford_g.variance(pooled)).sqrt()

    def finish(self, state: AdaptationState | None, step_size: torch.Tensor) -> torch.Tensor:
        """The step size to sample with after warm-up: the dual-averaging iterate average
        since its last restart (over the terminal buffer)."""
        if state is None or not self.step_size or state.dual_steps == 0:
            return step_size
        _, log_avg = state.dual.get_state()
        return torch.exp(log_avg)


def initial_step_size(value: float, name: str = "step_size") -> float:
    """Validate a user-given step size."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)
