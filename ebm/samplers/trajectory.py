"""Trajectory length of HMC tuned across chains during warm-up: ChEES (Hoffman, Radul &
Sountsov 2021, "An adaptive MCMC scheme for setting trajectory lengths in Hamiltonian
Monte Carlo"; BlackJAX's ``chees_adaptation``), written for ``ebm``'s batched chains.

Jittered trajectories. Transition ``t`` runs ``n_t = ceil(u_t · T / ε)`` leapfrog steps
(at least 1, at most ``max_leapfrog``), the same for every chain, where ``u_t`` in (0, 1) is
the van der Corput (base-2 Halton) sequence. Jitter breaks the near-periodic orbits a fixed
length can hit; a low-discrepancy ``u_t`` covers (0, 1) evenly with no random numbers and no
host sync. Every kernel of the sequence leaves the target invariant (each is HMC with a
fixed length), so the chains stay exact.

ChEES. With ``z`` the position in whitened coordinates (``z = L⁻¹ x`` for ``M⁻¹ = L Lᵀ``),
``m`` the mean over chains, the criterion ``¼ E[(|z' − m'|² − |z − m|²)²]`` measures how far a
transition moves the chains' spread; its derivative with respect to ``log T`` is, per chain,
``t (|z' − m'|² − |z − m|²) (z' − m') · v'`` (``t = n_t ε`` the integration time; ``z'``,
``v'``: end point and velocity of the proposal, ``m'`` the acceptance-weighted mean of the
proposals), averaged over the healthy non-divergent chains, weighted by acceptance
probability.

ChEES is far from concave in ``T`` with jittered lengths: on a standard 10-d Gaussian its
derivative changes sign again at ``T`` ~ 2.3, 4, 7, 15, ... (measured: +2.3 at T = 2, −5.0 at
3, +3.9 at 5, −1.8 at 10, +3.7 at 20, with per-chain noise ~100 at T = 10), so Adam tends to
wander to long trajectories, up to the ``max_leapfrog`` cap: costly, but it mixes. We tried
ChEES per unit of cost (``log ChEES − log T``, optimum at T ~ 1.6 there): it collapsed to
about one leapfrog step on eight schools (non-centred), the banana and the rotated Gaussian
(R-hat 1.07–1.18 with 256 chains, against 1.004–1.012 with plain ChEES), so we follow
BlackJAX and the paper. The derivative drives Adam ascent on ``log T`` (learning rate
``LEARNING_RATE``, each update clipped to ±``MAX_UPDATE``); the trajectory used is the
moving average of the iterates with weights ``t^-½`` (as BlackJAX). The optimised variable
is ``log(T / ε)``, the length in (continuous) leapfrog steps, floored at 1 step: its
derivative at fixed ``ε`` is that of ``log T``, and while dual averaging moves ``ε`` (by a
factor 10 at each restart) the trajectory moves with it, instead of collapsing to a single
step, where the derivative carries no signal (BlackJAX starts ``T`` at ``ε`` for this
reason).

Host syncs: the leapfrog count must be a Python integer, so ``T / ε`` is read from the
device once every ``CHECK_EVERY`` warm-up steps and once at the end of warm-up, never
while sampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: Adam's learning rate on log T
LEARNING_RATE = 0.05
#: largest change of log T in one update (BlackJAX and TFP: ~log(2)/2)
MAX_UPDATE = 0.35
BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8


def halton(t: int) -> float:
    """The ``t``-th (from 0) van der Corput number in base 2, in (0, 1): 0.5, 0.25, 0.75, ..."""
    t += 1
    value, base = 0.0, 0.5
    while t:
        value += base * (t & 1)
        t >>= 1
        base *= 0.5
    return value


def leapfrog_count(t: int, scale: float, max_leapfrog: int) -> int:
    """Jittered number of leapfrog steps of transition ``t`` for ``T / ε = scale``."""
    return max(1, min(max_leapfrog, math.ceil(halton(t) * scale)))


@dataclass
class TrajectoryState:
    """ChEES's Adam iterate on ``log(T / ε)`` during warm-up (scalar tensors on the device).

    Attributes:
        log_length: current iterate of ``log(T / ε)``.
        log_average: moving average of the iterates (the value in use).
        moment1, moment2: Adam's moment estimates.
        n_updates: updates so far.
    """

    log_length: torch.Tensor
    log_average: torch.Tensor
    moment1: torch.Tensor
    moment2: torch.Tensor
    n_updates: int = 0

    @classmethod
    def start(cls, length: torch.Tensor) -> TrajectoryState:
        log = length.log()
        return cls(log.clone(), log.clone(), torch.zeros_like(log), torch.zeros_like(log))

    def update(self, estimate: torch.Tensor, ceiling: float) -> torch.Tensor:
        """One Adam ascent step on ChEES from this transition's ``estimate``
        (``chees_gradient``), the iterate kept in ``[1, ceiling]``; returns the new ``T / ε``."""
        self.n_updates += 1
        t = self.n_updates
        gradient = torch.nan_to_num(estimate, nan=0.0, posinf=0.0, neginf=0.0)
        self.moment1 = BETA1 * self.moment1 + (1 - BETA1) * gradient
        self.moment2 = BETA2 * self.moment2 + (1 - BETA2) * gradient.square()
        m_hat = self.moment1 / (1 - BETA1**t)
        v_hat = self.moment2 / (1 - BETA2**t)
        step = (LEARNING_RATE * m_hat / (v_hat.sqrt() + ADAM_EPS)).clamp(-MAX_UPDATE, MAX_UPDATE)
        # projected: the iterate stays in [1, ceiling] steps, where the leapfrog count follows it
        self.log_length = (self.log_length + step).clamp(0.0, math.log(ceiling))
        weight = t**-0.5
        self.log_average = (1 - weight) * self.log_average + weight * self.log_length
        return self.log_average.exp()


def chees_gradient(
    start: torch.Tensor,
    end: torch.Tensor,
    velocity: torch.Tensor,
    accept_prob: torch.Tensor,
    usable: torch.Tensor,
    time: torch.Tensor,
) -> torch.Tensor:
    """ChEES's derivative with respect to ``log T`` (a scalar), from whitened
    ``(n_chains, D)`` start points, proposal end points and end velocities, ``(n_chains,)``
    acceptance probabilities and ``usable`` rows (finite, not divergent, not stuck), and the
    integration time ``n_t ε`` of the transition."""
    finite = usable & torch.isfinite(end).all(-1) & torch.isfinite(velocity).all(-1)
    w = torch.where(finite, accept_prob, torch.zeros_like(accept_prob))
    end = torch.where(finite.unsqueeze(-1), end, torch.zeros_like(end))
    velocity = torch.where(finite.unsqueeze(-1), velocity, torch.zeros_like(velocity))
    end_centred = end - (w.unsqueeze(-1) * end).sum(0) / (w.sum() + 1e-20)
    start_centred = start - start.mean(0)
    change = end_centred.square().sum(-1) - start_centred.square().sum(-1)
    change = torch.where(finite, change, torch.zeros_like(change))
    per_chain = time * change * (end_centred * velocity).sum(-1)
    return (w * per_chain).sum() / (w.sum() + 1e-20)
