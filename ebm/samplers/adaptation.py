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

Many chains (shared tuning). A few chains stuck where the step is far too large for them
must not steer the tuning of all, and the regions where they are stuck may be part of the
target (a funnel's neck, a banana's tails). Two statistics for the shared step size:

- ``"harmonic"`` (HMC with a tuned trajectory length, ChEES-HMC's choice, Hoffman, Radul &
  Sountsov 2021): the harmonic mean of the acceptance probabilities of the chains not
  found stuck (``ebm.samplers.rescue``: low acceptance or tiny jumps). It is
  dominated by the chains that accept least, so the step fits the hardest region any chain
  visits, and the tuned trajectory length makes up for the smaller step with more leapfrog
  steps. On a banana and a funnel this removes the divergences and the frozen tail chains
  that the plain mean leaves (``benchmarks/posteriors.py``).
  With many chains it is also set by the single worst one (one chain at acceptance 0.001
  among 1,023 at 0.8 gives 0.45): on the centred eight schools the chain deepest in the
  funnel's neck sets ``ε``. ``accept_floor`` (HMC's ``step_range``, which gives such chains
  small steps of their own) counts each acceptance as at least that much.
- ``"mean"`` (MALA, HMC with a fixed ``n_leapfrog``): the mean over the chains not found
  stuck. With one proposal per step, a step sized to the worst chain makes every other
  chain crawl.

And chains found stuck (``ebm.samplers.rescue``) are left out of the pooled mass estimate
of their window and restarted from healthy chains, during warm-up only.

Dense mass (``dense=True``, shared only; Stan's ``dense_e``, NumPyro's ``dense_mass``):
the full inverse mass ``M⁻¹ = Σ`` is estimated from the pooled covariances of positions
``A = Cov[x]`` and of gradients ``G = Cov[∂E/∂x]`` over all chains and draws of a window.
``"variance"`` takes ``Σ = A``; ``"gradient"`` takes the matrix geometric mean of ``A`` and
``G⁻¹``, ``Σ = A^{1/2} (A^{1/2} G A^{1/2})^{-1/2} A^{1/2}``, the unique SPD solution of
``Σ G Σ = A``: for a Gaussian target ``G = C⁻¹ A C⁻¹`` (``C`` its covariance) whatever the
chains' spread, so ``Σ = C`` exactly, the dense analogue of the diagonal ratio above.
Both get Stan's shrinkage towards ``1e-3 I``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pyro.ops.dual_averaging import DualAveraging

from ebm.samplers.rescue import CHECK_EVERY, donors, stuck_chains

MASS_ESTIMATORS = ("variance", "gradient")
#: largest sampled dimension that gets a dense mass when its choice is left to the sampler:
#: the dense mass costs a ``(n_chains, D) @ (D, D)`` product per gradient evaluation and a
#: ``D x D`` eigendecomposition per mass window
DENSE_MAX_DIM = 128


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

    def variance(self, pooled: bool, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Regularised variance: per row ``(rows, D)``, or ``(1, D)`` over all rows and draws
        (Chan et al.'s parallel combination ``M2 = Σ_r M2_r + n Σ_r (mean_r − mean)²``),
        pooled over the rows where ``rows`` (``(rows,)`` bool; default all) is true.
        Stan's shrinkage ``n/(n+5) · var + 1e-3 · 5/(n+5)`` over the ``n`` draws used."""
        if self.count < 2:
            raise RuntimeError("a mass window needs at least 2 draws")
        m2, n = self.m2, self.count
        if pooled:
            w = torch.ones_like(self.mean[:, :1]) if rows is None else rows.to(self.mean.dtype).unsqueeze(-1)
            used = w.sum()
            mean = (w * self.mean).sum(0, keepdim=True) / used
            m2 = (w * m2).sum(0, keepdim=True) + n * (w * (self.mean - mean).pow(2)).sum(0, keepdim=True)
            n = n * used
        variance = m2 / (n - 1)
        return (n / (n + 5.0)) * variance + 1e-3 * (5.0 / (n + 5.0))


@dataclass
class CrossMoments:
    """Pooled first and second moments of ``(rows, D)`` batches over every row and batch,
    weighted per row, for a dense covariance (float64 sums about a fixed centre, the
    first batch's weighted mean, which keeps the subtraction well conditioned).

    Attributes:
        weight: total weight seen (rows x batches when every weight is 1).
        centre: ``(D,)`` the reference point.
        total, outer: ``(D,)`` and ``(D, D)`` weighted sums of ``x − centre`` and of its outer products.
    """

    weight: torch.Tensor | None = None
    centre: torch.Tensor | None = None
    total: torch.Tensor | None = None
    outer: torch.Tensor | None = None

    def update(self, x: torch.Tensor, w: torch.Tensor) -> None:
        x, w = x.double(), w.double().unsqueeze(-1)
        if self.centre is None:
            self.centre = (w * x).sum(0) / w.sum().clamp(min=1.0)
            self.weight = torch.zeros((), dtype=x.dtype, device=x.device)
            self.total = torch.zeros_like(self.centre)
            self.outer = torch.zeros(x.shape[1], x.shape[1], dtype=x.dtype, device=x.device)
        d = x - self.centre
        self.weight = self.weight + w.sum()
        self.total = self.total + (w * d).sum(0)
        self.outer = self.outer + (w * d).T @ d

    def reset(self) -> None:
        self.weight = self.centre = self.total = self.outer = None

    def covariance(self) -> torch.Tensor:
        """Regularised ``(D, D)`` covariance, Stan's shrinkage ``n/(n+5) · C + 1e-3 · 5/(n+5) · I``."""
        n = self.weight
        mean = self.total / n
        cov = (self.outer - n * torch.outer(mean, mean)) / (n - 1)
        eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
        return (n / (n + 5.0)) * cov + 1e-3 * (5.0 / (n + 5.0)) * eye


def _sym_power(a: torch.Tensor, p: float) -> torch.Tensor:
    """``a^p`` of a symmetric positive-definite matrix (eigenvalues clamped at 1e-300)."""
    values, vectors = torch.linalg.eigh(0.5 * (a + a.T))
    return (vectors * values.clamp(min=1e-300).pow(p)) @ vectors.T


def geometric_mean_inverse(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The SPD ``Σ`` with ``Σ g Σ = a``: ``a^{1/2} (a^{1/2} g a^{1/2})^{-1/2} a^{1/2}`` (the
    matrix geometric mean of ``a`` and ``g⁻¹``), for ``(D, D)`` SPD ``a`` and ``g``."""
    root = _sym_power(a, 0.5)
    sigma = root @ _sym_power(root @ g @ root, -0.5) @ root
    return 0.5 * (sigma + sigma.T)


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
        total_steps: the burn-in length this warm-up was sized to.
        rescue: whether stuck chains are restarted (shared tuning, chains with one target).
        accept_sum: ``(n_chains,)`` acceptance probabilities summed since the last check.
        window_accept: ``(n_chains,)`` the same, since the current mass window started.
        excluded: ``(n_chains,)`` bool: chains left out of the current window's mass estimate.
        healthy: ``(n_chains,)`` bool: not found stuck at the last check.
        rescued: ``(n_chains,)`` restarts of each chain so far.
        jump_sum: ``(n_chains,)`` squared jumps (in units of the mass) since the last check.
        dense_x, dense_g: pooled moments of the window for a dense mass.
    """

    dual: DualAveraging
    welford_x: Welford
    welford_g: Welford
    window_ends: tuple[int, ...] = ()
    n_steps: int = 0
    dual_steps: int = 0
    total_steps: int = 0
    rescue: bool = False
    accept_sum: torch.Tensor | None = None
    window_accept: torch.Tensor | None = None
    excluded: torch.Tensor | None = None
    healthy: torch.Tensor | None = None
    rescued: torch.Tensor | None = None
    jump_sum: torch.Tensor | None = None
    dense_x: CrossMoments | None = None
    dense_g: CrossMoments | None = None


def harmonic_mean(accept_prob: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted harmonic mean of ``(n_chains,)`` acceptance probabilities (0 when one of
    positive weight is 0)."""
    inverse = torch.where(weight > 0, 1.0 / accept_prob, torch.zeros_like(accept_prob))
    return weight.sum() / (weight * inverse).sum()


class Adapter:
    """Warm-up tuning of a step size (dual averaging) and an inverse mass (diagonal by
    default, dense on request), with stuck-chain restarts when tuning is shared.

    Args:
        target_accept: acceptance probability dual averaging aims for (0.574 MALA, 0.65 HMC).
        step_size: tune the step size.
        mass: tune the inverse mass.
        per_chain: one step size and mass per chain instead of values shared by all chains.
        mass_estimator: ``"gradient"`` or ``"variance"`` (see the module docstring).
        dense: a dense inverse mass (shared tuning only); ``None``: dense when the sampled
            dimension is at most ``DENSE_MAX_DIM`` (``is_dense``).
        rescue: restart stuck chains from healthy ones during warm-up (shared tuning only;
            ``ebm.samplers.rescue``).
        statistic: what shared tuning steers towards ``target_accept``: ``"mean"``, the mean
            acceptance over the chains not found stuck, or ``"harmonic"``, the harmonic mean
            over all chains (see the module docstring).
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
        dense: bool | None = False,
        rescue: bool = True,
        statistic: str = "mean",
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
        if statistic not in ("mean", "harmonic"):
            raise ValueError(f"statistic must be 'mean' or 'harmonic', got {statistic!r}")
        if dense and per_chain:
            raise ValueError("dense_mass=True estimates one mass from all chains: use it with per_chain=False")
        self.target_accept = target_accept
        self.step_size = step_size
        self.mass = mass
        self.per_chain = per_chain
        self.mass_estimator = mass_estimator
        self.dense = None if dense is None else bool(dense)
        self.statistic = statistic
        # the harmonic mean counts a chain's acceptance as at least this (HMC's step_range)
        self.accept_floor = 0.0
        self.rescue = bool(rescue) and not per_chain
        self.init_buffer = init_buffer
        self.first_window = first_window
        self.term_buffer = term_buffer
        self.min_steps = min_steps

    def is_dense(self, dim: int) -> bool:
        """Whether a ``dim``-dimensional position gets a dense mass."""
        if self.dense is None:
            return not self.per_chain and dim <= DENSE_MAX_DIM
        return self.dense

    @property
    def active(self) -> bool:
        return self.step_size or self.mass

    def schedule(self, n_steps: int) -> tuple[int, ...]:
        """The mass-window ends for a burn-in of ``n_steps`` (empty when mass is not tuned)."""
        if not self.mass:
            return ()
        return warmup_schedule(n_steps, self.init_buffer, self.first_window, self.term_buffer)

    def start(
        self, step_size: torch.Tensor, n_steps: int, n_chains: int = 1, rescue: bool = True, dense: bool = False
    ) -> AdaptationState | None:
        """Bookkeeping for a burn-in of ``n_steps`` steps of ``n_chains`` chains starting from
        ``step_size`` (``None``: nothing to tune); dual averaging is centred on
        ``log(10 · step_size)``. ``rescue=False`` turns restarts off for this run (chains
        with targets of their own); ``dense``: the mass is dense (``is_dense``)."""
        if not self.active or n_steps < max(1, self.min_steps):
            return None
        state = AdaptationState(DualAveraging(), Welford(), Welford(), self.schedule(n_steps), total_steps=n_steps)
        state.rescue = self.rescue and rescue and n_chains >= 4
        kw = {"dtype": step_size.dtype, "device": step_size.device}
        state.accept_sum = torch.zeros(n_chains, **kw)
        state.window_accept = torch.zeros(n_chains, **kw)
        state.excluded = torch.zeros(n_chains, dtype=torch.bool, device=step_size.device)
        state.healthy = ~state.excluded
        state.rescued = torch.zeros(n_chains, dtype=torch.long, device=step_size.device)
        state.jump_sum = torch.zeros(n_chains, **kw)
        if dense:
            state.dense_x, state.dense_g = CrossMoments(), CrossMoments()
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

    def _window_start(self, state: AdaptationState) -> int:
        """The step after which the current mass window started."""
        earlier = [e for e in state.window_ends if e < state.n_steps]
        return earlier[-1] if earlier else self.init_buffer

    def _rescue_until(self, state: AdaptationState) -> int:
        """Last step at which chains may be restarted: before the terminal buffer (or the
        second half of a windowless warm-up), so that the final step size is tuned on the
        chains as they will be sampled."""
        ends = state.window_ends
        return ends[-1] if ends else state.total_steps // 2

    def update(
        self,
        state: AdaptationState,
        accept_prob: torch.Tensor,
        position: torch.Tensor,
        grad: torch.Tensor,
        step_size: torch.Tensor,
        inv_mass: torch.Tensor,
        generator: torch.Generator | None = None,
        jump: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One warm-up update after a transition.

        Args:
            accept_prob: ``(n_chains,)`` acceptance probabilities of the transition.
            position, grad: ``(n_chains, D)`` state and energy gradient after it.
            step_size: ``(n_chains, 1)`` or ``(1, 1)``; inv_mass: ``(n_chains, D)``, ``(1, D)``
                or, dense, ``(1, D, D)``.
            generator: for the choice of healthy chains to restart stuck ones from.
            jump: ``(n_chains,)`` squared distance each chain moved, in units of the mass.

        Returns:
            The new ``(step_size, inv_mass, restart)``: same shapes, and ``None`` or a
            ``(n_chains,)`` index of the chain each chain continues from (itself, or a
            healthy chain when it was stuck): the caller moves the chains.
        """
        state.n_steps += 1
        accept_prob = accept_prob.detach().to(state.accept_sum.dtype)
        state.accept_sum += accept_prob
        state.window_accept += accept_prob
        if jump is not None:
            state.jump_sum += jump.detach().to(state.jump_sum.dtype)
        if self.step_size:
            if self.per_chain:
                accept = accept_prob.unsqueeze(-1)
            else:
                accept = self._shared_statistic(state, accept_prob).reshape(1, 1)
            state.dual.step(self.target_accept - accept)
            state.dual_steps += 1
            log_step, _ = state.dual.get_state()
            step_size = torch.exp(log_step)
        if self._collecting(state):
            self._collect(state, position.detach(), grad.detach())
            if state.n_steps in state.window_ends:
                inv_mass = self._window_estimate(state).to(inv_mass.dtype)
                if self.step_size:
                    self._restart_dual(state, step_size)
        restart = None
        if state.rescue and state.n_steps % CHECK_EVERY == 0 and state.n_steps <= self._rescue_until(state):
            stuck = stuck_chains(state.accept_sum / CHECK_EVERY, state.jump_sum / CHECK_EVERY)
            state.healthy = ~stuck
            state.excluded |= stuck
            state.rescued += stuck
            restart = donors(stuck, generator)
        if state.n_steps % CHECK_EVERY == 0:
            state.accept_sum.zero_()
            state.jump_sum.zero_()
        return step_size, inv_mass, restart

    def _shared_statistic(self, state: AdaptationState, accept_prob: torch.Tensor) -> torch.Tensor:
        # over the chains not found stuck: a few stuck ones do not steer the step
        w = state.healthy.to(accept_prob.dtype)
        if self.statistic == "harmonic":
            return harmonic_mean(accept_prob.clamp(min=self.accept_floor), w)
        return (w * accept_prob).sum() / w.sum()

    def _collect(self, state: AdaptationState, position: torch.Tensor, grad: torch.Tensor) -> None:
        if state.dense_x is not None:
            w = state.healthy
            state.dense_x.update(position, w)
            if self.mass_estimator == "gradient":
                state.dense_g.update(grad, w)
            return
        state.welford_x.update(position)
        if self.mass_estimator == "gradient":
            state.welford_g.update(grad)

    def _window_estimate(self, state: AdaptationState) -> torch.Tensor:
        """The inverse mass from the window just ended, without the chains stuck in it; the
        window's accumulators are reset."""
        steps = state.n_steps - self._window_start(state)
        rows = None
        if state.rescue:
            rows = ~(state.excluded | stuck_chains(state.window_accept / steps))
        state.window_accept.zero_()
        state.excluded.zero_()
        if state.dense_x is not None:
            a = state.dense_x.covariance()
            sigma = a if self.mass_estimator == "variance" else geometric_mean_inverse(a, state.dense_g.covariance())
            state.dense_x.reset()
            state.dense_g.reset()
            return sigma.unsqueeze(0)
        inv_mass = self._estimate(state, rows)
        state.welford_x.reset()
        state.welford_g.reset()
        return inv_mass

    def _estimate(self, state: AdaptationState, rows: torch.Tensor | None = None) -> torch.Tensor:
        pooled = not self.per_chain
        var_x = state.welford_x.variance(pooled, rows)
        if self.mass_estimator == "variance":
            return var_x
        return (var_x / state.welford_g.variance(pooled, rows)).sqrt()

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
