"""Step-size and diagonal mass adaptation for gradient-based samplers, batched over chains.

Step size: dual averaging (Hoffman & Gelman 2014, section 3.2) with
``pyro.ops.dual_averaging.DualAveraging``. Its update is elementwise, so feeding it the
statistic ``target - accept_prob`` as a ``(n_chains, 1)`` tensor tunes one step size per
chain, and feeding ``target - mean(accept_prob)`` as a ``(1, 1)`` tensor tunes one shared
step size; either way no value leaves the device.

Mass: windowed estimation in the style of Stan. After ``init_buffer`` steps, burn-in draws
enter ``pyro.ops.welford.WelfordCovariance(diagonal=True)`` accumulators, fed the whole
``(n_chains, D)`` batch at once so each chain keeps its own running moments. At the end of
each window (25 steps, then doubling) the inverse mass (the sampler's per-coordinate
"variance" scale) is re-estimated, the accumulators are reset and dual averaging restarts
around the current step size, as in Pyro's and Stan's warm-up. Two estimators:

- ``"variance"``: the posterior variance of each coordinate (Stan's choice).
- ``"gradient"``: ``sqrt(Var[x] / Var[∂E/∂x])`` (Tran, Kleppe et al. 2024). For a Gaussian
  target ``∂E/∂x = Σ⁻¹(x − μ)`` coordinatewise, so the ratio equals the variance whatever
  the distribution of the chains: it is right even while chains are still far from
  equilibrium, which makes burn-in on ill-conditioned targets much shorter.

Shared estimates pool all chains (within-chain plus between-chain spread); per-chain ones
use each chain's own draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from pyro.ops.dual_averaging import DualAveraging
from pyro.ops.welford import WelfordCovariance

MASS_ESTIMATORS = ("variance", "gradient")


def pooled_variance(welford: WelfordCovariance) -> torch.Tensor:
    """Variance over all chains and draws of a ``WelfordCovariance`` fed ``(n_chains, D)``
    batches, with Stan's regularisation; shape ``(1, D)``.

    Chan et al.'s parallel combination: ``M2 = Σ_c M2_c + n Σ_c (mean_c − mean)²``. Pyro's
    class exposes no accessor for the running mean and ``M2``, hence the private fields.
    """
    n = welford.n_samples
    means, m2 = welford._mean, welford._m2
    n_chains = means.shape[0]
    mean = means.mean(0, keepdim=True)
    total = m2.sum(0, keepdim=True) + n * (means - mean).pow(2).sum(0, keepdim=True)
    count = n * n_chains
    variance = total / (count - 1)
    # Stan's shrinkage towards a small constant, as WelfordCovariance.get_covariance does.
    return (count / (count + 5.0)) * variance + 1e-3 * (5.0 / (count + 5.0))


@dataclass
class AdaptationState:
    """Mutable warm-up bookkeeping carried in a sampler's state.

    Attributes:
        dual: the dual-averaging scheme on ``log step_size``.
        welford_x, welford_g: running moments of positions and energy gradients.
        n_steps: adaptation steps taken so far.
        dual_steps: dual-averaging updates since its last restart.
        window_start, window_size: the current mass-estimation window.
    """

    dual: DualAveraging
    welford_x: WelfordCovariance = field(default_factory=WelfordCovariance)
    welford_g: WelfordCovariance = field(default_factory=WelfordCovariance)
    n_steps: int = 0
    dual_steps: int = 0
    window_start: int = 0
    window_size: int = 0


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
    ):
        if not 0.0 < target_accept < 1.0:
            raise ValueError(f"target_accept must lie in (0, 1), got {target_accept!r}")
        if mass_estimator not in MASS_ESTIMATORS:
            raise ValueError(f"mass_estimator must be one of {MASS_ESTIMATORS}, got {mass_estimator!r}")
        if init_buffer < 0 or first_window < 2:
            raise ValueError("init_buffer must be >= 0 and first_window >= 2")
        self.target_accept = target_accept
        self.step_size = step_size
        self.mass = mass
        self.per_chain = per_chain
        self.mass_estimator = mass_estimator
        self.init_buffer = init_buffer
        self.first_window = first_window

    @property
    def active(self) -> bool:
        return self.step_size or self.mass

    def start(self, step_size: torch.Tensor) -> AdaptationState:
        """Fresh bookkeeping, dual averaging centred on ``log(10 · step_size)`` as in Pyro."""
        state = AdaptationState(DualAveraging(), WelfordCovariance(), WelfordCovariance())
        self._restart_dual(state, step_size)
        state.window_start, state.window_size = self.init_buffer, self.first_window
        return state

    @staticmethod
    def _restart_dual(state: AdaptationState, step_size: torch.Tensor) -> None:
        state.dual.prox_center = torch.log(10 * step_size)
        state.dual.reset()
        state.dual_steps = 0

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
        if self.mass and state.n_steps > state.window_start:
            state.welford_x.update(position.detach())
            if self.mass_estimator == "gradient":
                state.welford_g.update(grad.detach())
            if state.welford_x.n_samples >= state.window_size:
                inv_mass = self._estimate(state)
                state.welford_x.reset()
                state.welford_g.reset()
                state.window_start = state.n_steps
                state.window_size *= 2
                if self.step_size:
                    self._restart_dual(state, step_size)
        return step_size, inv_mass

    def _variance(self, welford: WelfordCovariance) -> torch.Tensor:
        return welford.get_covariance(regularize=True) if self.per_chain else pooled_variance(welford)

    def _estimate(self, state: AdaptationState) -> torch.Tensor:
        var_x = self._variance(state.welford_x)
        if self.mass_estimator == "variance":
            return var_x
        return (var_x / self._variance(state.welford_g)).sqrt()

    def finish(self, state: AdaptationState, step_size: torch.Tensor) -> torch.Tensor:
        """The step size to sample with after warm-up: the dual-averaging iterate average."""
        if not self.step_size or state.dual_steps == 0:
            return step_size
        _, log_avg = state.dual.get_state()
        return torch.exp(log_avg)


def initial_step_size(value: float, name: str = "step_size") -> float:
    """Validate a user-given step size."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)
