"""``warn_unreliable``: the one warning ``ebm.sample`` gives when its draws should not be trusted.

``ebm.sample`` checks, at the end of every run: divergent transitions, each HMC chain's
E-BFMI (below ``diagnostics.E_BFMI_THRESHOLD`` = 0.3, from the ``hamiltonian`` record), and R-hat
(``> RHAT_THRESHOLD`` or infinite) and bulk/tail ESS (``< ESS_THRESHOLD``) of the energy and
of every sampled block. So that the check stays cheap for big blocks (an RBM's 784 pixels x
1000 chains x many draws), a block with more than ``CHECK_DRAWS`` draws in all is checked
on ``2 * CHECK_SITES`` of its sites only: those a cheap screen finds most suspicious, the
largest plain split R-hat (of the draws and of their distance to the mean) and the largest
lag-1 autocorrelation. Such a block is also thinned, every chain alike, to about
``CHECK_PER_SITE`` draws per site (never below ``MIN_DRAWS_PER_CHAIN`` per chain): thinning
keeps every chain, so a stuck chain still shows in R-hat, and it cannot push an ESS below
``ESS_THRESHOLD`` that was above it (a thinned ESS is about ``min(ESS, CHECK_PER_SITE)``,
and ``CHECK_PER_SITE`` is far above the threshold). ``chains.summary()`` computes
everything for every site from every draw.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch

from ebm.summary import (
    E_BFMI_ADVICE,
    ESS_THRESHOLD,
    RHAT_THRESHOLD,
    Summary,
    e_bfmi_digest,
    e_bfmi_problem,
    summarize,
)

if TYPE_CHECKING:
    from ebm.chains import Chains
    from ebm.samplers.base import Sampler

#: a block with at most this many draws (n_draws * n_chains * sites) is checked site by site
CHECK_DRAWS = 2**20
#: values of the draws per block of ``suspicious_sites``'s passes
SCREEN_CHUNK = 2**22
#: sites of a larger block checked per screen (by R-hat, by autocorrelation)
CHECK_SITES = 8
#: a larger block is thinned to about this many draws per site (all chains together) ...
CHECK_PER_SITE = 2**16
#: ... keeping at least this many per chain
MIN_DRAWS_PER_CHAIN = 16


def separate_targets(chains: Chains) -> bool:
    """Whether the chains are clamped to observed data that differ from chain to chain (one
    data row per chain), so that each chain targets its own conditional distribution."""
    for name in chains.observed:
        rows = chains.draws[name][0]
        if rows.shape[0] > 1 and bool((rows != rows[:1]).any()):
            return True
    return False


def _rhat_from_sums(total: torch.Tensor, squares: torch.Tensor, h: int) -> torch.Tensor:
    """Plain R-hat ``(S,)`` of chain pieces of ``h`` draws from their sums and sums of squares ``(pieces, S)``."""
    means = total / h
    within = ((squares - h * means.square()) / (h - 1)).mean(0)
    return ((h * means.var(0) / within + h - 1) / h).sqrt()


def suspicious_sites(x: torch.Tensor, k: int = CHECK_SITES) -> torch.Tensor:
    """Indices of at most ``2k`` non-constant sites of ``x`` ``(n_draws, n_chains, S)``: the
    ``k`` with the largest plain split R-hat (of ``x`` and of ``|x - mean|``) and the ``k``
    with the largest lag-1 autocorrelation (mean over chains).

    Two passes over the draws, ``SCREEN_CHUNK`` values at a time in contiguous blocks of
    draws. Each block's sums are taken in the draws' own dtype (float32 reductions over the
    draws dimension run an order of magnitude faster than float64 ones here) and accumulated
    in float64; the draws are shifted by each site's mean over the chains' first draw first,
    so that sums of squares of a site far from zero do not cancel. Every statistic is
    shift-invariant."""
    n, m, n_sites = x.shape
    half = n // 2
    rows = max(1, SCREEN_CHUNK // max(1, m * n_sites))
    reference = x[0].mean(0)
    zeros = torch.zeros(2, m, n_sites, dtype=torch.float64, device=x.device)
    first, second, folded_first, folded_second = zeros.clone(), zeros.clone(), zeros.clone(), zeros.clone()
    lagged = torch.zeros(m, n_sites, dtype=torch.float64, device=x.device)
    high = torch.full((n_sites,), -torch.inf, dtype=torch.float64, device=x.device)
    low = -high
    for t in range(0, n, rows):
        c = x[t : min(t + rows + 1, n)] - reference  # one draw of overlap for the lag-1 products
        own = c[: min(rows, n - t)]
        lagged += (c[1:] * c[:-1]).sum(0)
        high, low = torch.maximum(high, own.amax((0, 1))), torch.minimum(low, own.amin((0, 1)))
        for target, lo, hi in ((first, 0, half), (second, n - half, n)):
            piece = own[max(lo - t, 0) : max(hi - t, 0)]
            target[0] += piece.sum(0)
            target[1] += piece.square().sum(0)
    mean = ((first[0] + second[0]).sum(0) / (2 * half * m)).to(x.dtype)
    for t in range(0, n, rows):
        own = (x[t : t + rows] - reference - mean).abs()
        for target, lo, hi in ((folded_first, 0, half), (folded_second, n - half, n)):
            piece = own[max(lo - t, 0) : max(hi - t, 0)]
            target[0] += piece.sum(0)
            target[1] += piece.square().sum(0)
    rhat = torch.maximum(
        _rhat_from_sums(torch.cat([first[0], second[0]]), torch.cat([first[1], second[1]]), half),
        _rhat_from_sums(
            torch.cat([folded_first[0], folded_second[0]]), torch.cat([folded_first[1], folded_second[1]]), half
        ),
    )
    chain_mean = (first[0] + second[0]) / (2 * half)
    chain_var = (first[1] + second[1]) / (2 * half) - chain_mean.square()
    lag1 = (lagged / (n - 1) - chain_mean.square()) / chain_var
    # a site with a NaN draw has NaN extremes: keep it, and rank it first (as a varying site
    # whose plain R-hat is NaN, every chain constant at its own value, it is stuck)
    varying = ~(high <= low)
    rhat = rhat.nan_to_num(nan=torch.inf).masked_fill(~varying, -torch.inf)
    lag1 = lag1.nan_to_num(nan=-2.0).mean(0).masked_fill(~varying, -torch.inf)
    k = min(k, n_sites)
    picked = torch.cat([rhat.topk(k).indices, lag1.topk(k).indices]).unique()
    return picked[varying[picked]]


def check(chains: Chains) -> Summary:
    """The statistics ``ebm.sample`` checks: the energy, every site of blocks with at most
    ``CHECK_DRAWS`` draws, and the ``suspicious_sites`` of larger blocks."""
    separate = separate_targets(chains)
    n, m = chains.n_draws, chains.n_chains
    entries = {"energy": summarize(chains.energy, separate)}
    for name, x in chains.draws.items():
        if name in chains.observed:
            continue
        sites = x.reshape(n, m, -1)
        if sites.numel() > CHECK_DRAWS:
            stride = max(1, min(n * m // CHECK_PER_SITE, n // MIN_DRAWS_PER_CHAIN))
            sites = sites[::stride]
            sites = sites[..., suspicious_sites(sites)]
        entries[name] = summarize(sites, separate)
    return Summary(entries, {}, n, m, separate)


def _tunes_step_size(sampler: object) -> bool:
    """Whether ``sampler`` (or one inside it: composite parts, tempering's inner sampler)
    chooses its own step size during burn-in."""
    adapter = getattr(sampler, "adapter", None)
    if getattr(adapter, "step_size", False) is True or getattr(sampler, "warmup_steps", 0):
        return True
    inner = [getattr(sampler, "sampler", None), *(part for _, part in getattr(sampler, "parts", ()))]
    return any(_tunes_step_size(s) for s in inner if s is not None)


def divergence_advice(sampler: object, burn_in: int) -> str:
    """What to do about divergences, depending on who chose the step size."""
    if not _tunes_step_size(sampler):
        return "Lower the step size (or let it adapt during burn-in), or check the energy for NaN/inf."
    if burn_in == 0:
        return "burn_in=0, so the step size was not tuned in this call: give a burn-in, or lower the step size."
    return (
        "The step size was tuned during burn-in, so raise target_accept (smaller steps), lengthen burn-in, "
        "reparameterise (standardise badly scaled variables; write hierarchical models non-centred: a funnel's "
        "neck is beyond a fixed-length HMC), or check the energy for NaN/inf."
    )


def nan_energy_problems(chains: Chains) -> list[str]:
    """One line per block in which ``ebm.Gibbs`` met NaN energy differences (its
    ``nan_energy_<block>`` / ``nan_sweep_<block>`` records, counted on the device)."""
    lines = []
    for key, counts in chains.stats.items():
        if not key.startswith("nan_energy_") or counts.shape[0] == 0:
            continue
        block = key[len("nan_energy_") :]
        total = int(counts[-1].sum())
        if not total:
            continue
        sweeps = chains.stats.get(f"nan_sweep_{block}")
        first = ""
        if sweeps is not None and bool((sweeps[-1] >= 0).any()):
            first = f", first at sweep {int(sweeps[-1][sweeps[-1] >= 0].min())} (burn-in included)"
        lines.append(
            f"{total} NaN energy differences in block '{block}'{first}: those sites kept their values, so the draws "
            f"do not follow the model there. Find where the energy gives NaN (log of 0, 0/0, inf - inf)."
        )
    return lines


def warn_unreliable(chains: Chains, sampler: Sampler | None = None, burn_in: int = 0) -> None:
    """One ``RuntimeWarning`` listing what makes the draws unreliable (divergences, unstable
    unadjusted Langevin, chains with a low E-BFMI, R-hat, low ESS of the checked sites, see ``check``) with advice;
    silent when nothing is."""
    lines = []
    if chains.n_divergent:
        repeated = (chains.divergences >= chains.repeated_divergences).nonzero().flatten().tolist()
        named = f"; chain(s) {repeated[:20]}{' ...' if len(repeated) > 20 else ''} diverged repeatedly" if repeated else ""
        lines.append(
            f"{chains.n_divergent} divergent transition(s) after burn-in (NaN/inf energy or gradient, or a huge energy "
            f"error), all rejected{named}. {divergence_advice(sampler, burn_in)}"
        )
    lines += nan_energy_problems(chains)
    unstable = chains.stats.get("unstable")
    if unstable is not None and bool(unstable.any()):
        per_chain = unstable.any(0)
        lines.append(
            f"Unadjusted Langevin is unstable: {int(unstable.sum())} recorded transition(s) of {int(per_chain.sum())} "
            "chain(s) were taken with an energy error above 1000 nats, so the chains are blowing up and their draws "
            "mean nothing. Lower the step size, or use metropolis=True."
        )
    hamiltonian = chains.stats.get("hamiltonian")
    low_energy = None if hamiltonian is None else e_bfmi_problem(e_bfmi_digest(hamiltonian), chains.n_chains)
    if low_energy:
        lines.append(f"{low_energy}: {E_BFMI_ADVICE}.")
    if chains.n_draws >= 4:
        mixing = check(chains).problems()
        if mixing:
            lines.append(
                f"Chains not mixed: {'; '.join(mixing)} (R-hat should be <= {RHAT_THRESHOLD}, bulk and tail ESS >= "
                f"{ESS_THRESHOLD}). Run longer (more steps, or a longer burn-in); chains.summary() shows every site."
            )
    if lines:
        warnings.warn("\n".join(lines), RuntimeWarning, stacklevel=3)
