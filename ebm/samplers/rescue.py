"""Stuck chains during warm-up, and their restart from healthy ones.

With hundreds of chains, a few may start where the shared step size is far too large for
them (the neck of a funnel, the tail of a banana): they reject almost every proposal, never
move, and their draws would corrupt the mass estimate and R-hat. During warm-up only, every
``CHECK_EVERY`` steps, a chain is *stuck* when its mean acceptance probability since the last
check is below ``STUCK_ACCEPT`` and below ``STUCK_FRACTION`` times the median over chains
(relative, so that a step size that is still too large for every chain rescues nothing),
or when its mean squared jump, in units of the mass, is below ``JUMP_FRACTION`` of the
median: a chain in a tiny region (a spike of negligible mass) would pull a step size tuned
to the harmonic mean of the acceptances down to its own scale, then accept fine while the
other chains crawl; its jumps give it away. A stuck chain is restarted at the position of
a healthy chain picked at random.

Why the sample stays exact: restarts happen during warm-up only. After warm-up every chain
runs the same fixed kernel, which leaves the target invariant; a restart only changes where a
chain starts its sampling phase, as any other initialisation would. Draws kept after warm-up
are never touched. The price is that a restarted chain no longer explores from its own
start, so a mode that only stuck chains had found is abandoned: restarts are counted
(``chains.sampler_state.rescued``, per chain, over the last burn-in) so that this is visible.

All on the device: the decision and the copies are ``torch.where`` / gathers, no host sync.
"""

from __future__ import annotations

import torch

#: warm-up steps between two checks for stuck chains
CHECK_EVERY = 25
#: a chain whose mean acceptance since the last check is below this ...
STUCK_ACCEPT = 0.1
#: ... and below this fraction of the median over chains is stuck
STUCK_FRACTION = 0.25
#: so is a chain whose mean squared jump is below this fraction of the median
JUMP_FRACTION = 0.01


def stuck_chains(mean_accept: torch.Tensor, mean_jump: torch.Tensor | None = None) -> torch.Tensor:
    """``(n_chains,)`` bool: chains whose mean acceptance ``(n_chains,)`` marks them stuck, or
    whose mean squared jump (whitened by the mass) is below ``JUMP_FRACTION`` of the median.

    At most half the chains can be stuck by either rule (the median is a healthy value), and
    none when the median itself is 0."""
    stuck = (mean_accept < STUCK_ACCEPT) & (mean_accept < STUCK_FRACTION * mean_accept.median())
    if mean_jump is not None:
        stuck |= mean_jump < JUMP_FRACTION * mean_jump.median()
    return stuck


def donors(stuck: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``(n_chains,)`` row indices: a random healthy chain for each stuck one, itself otherwise."""
    n = stuck.shape[0]
    healthy = (~stuck).to(torch.float64)
    # every row has a healthy weight (stuck_chains leaves at least half the chains healthy)
    picked = torch.multinomial(healthy.expand(1, n) + 0.0, n, replacement=True, generator=generator).squeeze(0)
    return torch.where(stuck, picked, torch.arange(n, device=stuck.device))
