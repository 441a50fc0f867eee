"""Parallel tempering (replica exchange; Swendsen & Wang 1986, Geyer 1991) for any model.

``R`` replicas of every chain run at inverse temperatures ``1 = β₀ > β₁ > … > β_{R−1} ≥ 0``
on the tempered densities ``p_β ∝ exp(−β E)`` (``ebm.models.tempered.Tempered``). All
``R · n`` rows form one batch, replica-major (rows ``r·n … (r+1)·n − 1`` are replica
``r``), with a per-row β, so the inner sampler moves every replica in one call. After each
inner step, neighbouring replicas ``r, r+1`` of the same chain propose to exchange states
and accept with probability ``min(1, exp((β_r − β_{r+1})(E_r − E_{r+1})))``; even pairs on
even steps, odd pairs on odd steps (the deterministic even-odd scheme). The sampler's
``state`` is the ``β = 1`` replica, so ``ebm.sample`` records it and PCD trains on it.

With ``adapt=True`` the βs are re-spaced during burn-in so that every pair's swap rate
approaches the same value (in the spirit of Vousden, Farr & Mandel 2016): the gap of a pair
that swaps more often than average widens, of one that swaps less shrinks, with the ends
fixed and a decaying rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from ebm.model import EnergyModel
from ebm.models.tempered import Tempered
from ebm.samplers.base import Sampler, SamplerState, check_sampler
from ebm.variables import Real


def refreshed(sampler: Sampler, model: EnergyModel, sampler_state: SamplerState) -> SamplerState:
    """``sampler_state`` with its model-dependent caches redone for ``model`` and its current
    ``state`` (after β changed, or blocks were moved from outside): the sampler's ``refresh``
    or ``rebase`` when it has one; samplers that cache nothing (Gibbs) are returned as is."""
    refresh = getattr(sampler, "refresh", None)
    if callable(refresh):
        return refresh(model, sampler_state)
    rebase = getattr(sampler, "rebase", None)
    if callable(rebase):
        return rebase(model, sampler_state, sampler_state.state)
    return sampler_state


@dataclass
class TemperingState(SamplerState):
    """Parallel-tempering state. ``state`` is the ``β = 1`` replica (views of ``inner``'s rows).

    Attributes:
        inner: the inner sampler's state over all ``R · n`` rows, replica-major.
        betas: ``(R,)`` inverse temperatures, decreasing from 1.
        n_chains: ``n``, the chains per replica.
        parity: which pairs propose a swap at the next step (0: even, 1: odd).
        n_adapted: adaptation steps taken so far (sets the adaptation rate's decay).
    """

    inner: SamplerState | None = None
    betas: torch.Tensor | None = None
    n_chains: int = 0
    parity: int = 0
    n_adapted: int = 0


class ParallelTempering(Sampler):
    """Replica exchange around any inner sampler.

    Args:
        sampler: the kernel of every replica (``ebm.Gibbs()``, ``ebm.Langevin(...)``, ...).
        betas: the inverse temperatures: a sequence or 1-D tensor of distinct values in
            ``[0, 1]`` including 1 (sorted here, decreasing), or an integer ``R``: ``R`` βs
            spaced geometrically from 1 down to ``beta_min``.
        beta_min: the smallest β of an integer ``betas``.
        adapt: re-space the βs during burn-in (``adapt=True`` steps) towards equal swap rates.
        adapt_rate: initial rate of that adaptation (decays as ``1 / (1 + t/100)``).

    Info per step, each ``(n_chains,)`` for the ``β = 1`` replica: the inner sampler's
    records, ``energy``, and ``swap_prob_r`` for every pair ``r`` (between ``β_r`` and
    ``β_{r+1}``): the Metropolis probability of exchanging the pair's current states,
    computed for every pair at every step (a Rao-Blackwellised swap rate).
    """

    def __init__(
        self,
        sampler: Sampler,
        betas: Sequence[float] | torch.Tensor | int,
        *,
        beta_min: float = 0.1,
        adapt: bool = False,
        adapt_rate: float = 0.5,
    ):
        check_sampler(sampler, "ParallelTempering")
        if isinstance(sampler, ParallelTempering):
            raise TypeError("ParallelTempering cannot wrap another ParallelTempering")
        if isinstance(betas, int):
            if betas < 2:
                raise ValueError(f"parallel tempering needs at least 2 replicas, got {betas}")
            if not 0 < beta_min < 1:
                raise ValueError(f"beta_min must be in (0, 1), got {beta_min!r}")
            betas = torch.logspace(0, torch.log10(torch.tensor(beta_min)).item(), betas, dtype=torch.float64)
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten().sort(descending=True).values
        if betas.numel() < 2:
            raise ValueError("parallel tempering needs at least 2 inverse temperatures")
        if betas[0] != 1.0 or betas[-1] < 0 or bool((betas.diff() == 0).any()):
            raise ValueError(f"betas must be distinct values in [0, 1] including 1.0, got {betas.tolist()}")
        if not adapt_rate > 0:
            raise ValueError(f"adapt_rate must be positive, got {adapt_rate!r}")
        self.sampler = sampler
        self.betas = betas
        self.adapt = bool(adapt)
        self.adapt_rate = float(adapt_rate)
        self.needs_grad = sampler.needs_grad

    @staticmethod
    def _view(model: EnergyModel, betas: torch.Tensor, n: int) -> Tempered:
        return Tempered(model, betas.repeat_interleave(n))

    def init(self, model, state, observed=(), generator=None) -> TemperingState:
        observed = frozenset(observed)
        if self.betas[-1] == 0 and any(isinstance(model.variables[k], Real) for k in model.variables if k not in observed):
            raise ValueError("β = 0 makes a Real block improper; give betas > 0")
        n = next(iter(state.values())).shape[0]
        r = self.betas.numel()
        betas = self.betas.to(device=model.device, dtype=model.dtype)
        full = {k: v.repeat(r, *([1] * (v.dim() - 1))) for k, v in state.items()}
        inner = self.sampler.init(self._view(model, betas, n), full, observed, generator)
        return TemperingState(self._replica0(inner.state, n), observed, inner, betas, n)

    @staticmethod
    def _replica0(state, n):
        return {k: v[:n] for k, v in state.items()}

    def refresh(self, model: EnergyModel, sampler_state: TemperingState) -> TemperingState:
        """Redo the inner sampler's caches after the model's parameters changed (PCD)."""
        s = sampler_state
        inner = refreshed(self.sampler, self._view(model, s.betas, s.n_chains), s.inner)
        return replace(s, inner=inner)

    def step(self, model, sampler_state, generator=None, adapt=False):
        s: TemperingState = sampler_state
        n, betas = s.n_chains, s.betas
        r = betas.numel()
        view = self._view(model, betas, n)
        inner, inner_info = self.sampler.step(view, s.inner, generator, adapt)
        with torch.no_grad():
            energy = model.energy(inner.state).reshape(r, n)
            log_ratio = (betas[:-1] - betas[1:]).unsqueeze(1) * (energy[:-1] - energy[1:])
            swap_prob = log_ratio.clamp(max=0.0).exp()
            u = torch.rand(swap_prob.shape, generator=generator, dtype=swap_prob.dtype, device=swap_prob.device)
            proposed = (torch.arange(r - 1, device=betas.device) % 2 == s.parity).unsqueeze(1)
            swapped = (u < swap_prob) & proposed
            # source replica of each row: r+1 for the lower member of a swapped pair, r-1 for the upper
            zero = torch.zeros((1, n), dtype=torch.long, device=betas.device)
            source = torch.arange(r, device=betas.device).unsqueeze(1) + torch.cat([swapped.long(), zero])
            source = source - torch.cat([zero, swapped.long()])
            state = {}
            for name, x in inner.state.items():
                if name in s.observed:
                    state[name] = x
                    continue
                rows = x.reshape(r, n, -1)
                state[name] = rows.gather(0, source.unsqueeze(-1).expand_as(rows)).reshape(x.shape)
            energy = energy.gather(0, source)
            n_adapted = s.n_adapted
            if adapt and self.adapt:
                betas = self._respace(betas, swap_prob.mean(1), n_adapted)
                view = self._view(model, betas, n)
                n_adapted += 1
        inner = refreshed(self.sampler, view, replace(inner, state=state))
        info = {k: v[:n] for k, v in inner_info.items() if v.dim() >= 1 and v.shape[0] == r * n and k != "energy"}
        info["energy"] = energy[0]
        for pair in range(r - 1):
            info[f"swap_prob_{pair}"] = swap_prob[pair]
        new = TemperingState(self._replica0(inner.state, n), s.observed, inner, betas, n, 1 - s.parity, n_adapted)
        return new, info

    def _respace(self, betas: torch.Tensor, rates: torch.Tensor, t: int) -> torch.Tensor:
        gaps = betas[:-1] - betas[1:]
        rate = self.adapt_rate / (1 + t / 100)
        gaps = gaps * torch.exp(rate * (rates - rates.mean()))
        gaps = gaps * (betas[0] - betas[-1]) / gaps.sum()
        # the ends are copied, not recomputed, so that rounding never moves them
        return torch.cat([betas[:1], betas[0] - gaps.cumsum(0)[:-1], betas[-1:]])

    def start_adaptation(self, model, sampler_state, n_steps):
        """The inner sampler's warm-up over all replicas; the βs are re-spaced on every
        ``adapt=True`` step when ``adapt`` is set."""
        s = sampler_state
        inner = self.sampler.start_adaptation(self._view(model, s.betas, s.n_chains), s.inner, n_steps)
        return replace(s, inner=inner)

    def end_adaptation(self, model, sampler_state):
        s = sampler_state
        inner = self.sampler.end_adaptation(self._view(model, s.betas, s.n_chains), s.inner)
        return replace(s, inner=inner, state=self._replica0(inner.state, s.n_chains))

    def resume(self, model, sampler_state):
        """Continue with the carried ladder (its βs, possibly adapted, replace ``betas``) and
        every replica's state; the inner sampler resumes on the tempered view."""
        s = sampler_state
        if not isinstance(s, TemperingState):
            raise TypeError(f"ParallelTempering cannot continue from a {type(s).__name__} (chains drawn without tempering)")
        inner = self.sampler.resume(self._view(model, s.betas, s.n_chains), s.inner)
        return replace(s, inner=inner, state=self._replica0(inner.state, s.n_chains))
