"""``warn_unreliable``: the one warning ``ebm.sample`` gives when its draws should not be trusted.

``ebm.sample`` checks, at the end of every run: divergent transitions, and R-hat
(``> RHAT_THRESHOLD`` or infinite) and bulk/tail ESS (``< ESS_THRESHOLD``) of the energy and
of every sampled block. So that the check stays cheap for big blocks (an RBM's 784 pixels x
1000 chains x many draws), a block with more than ``CHECK_DRAWS`` draws in all is checked
on ``2 * CHECK_SITES`` of its sites only: those a cheap screen finds most suspicious, the
largest plain split R-hat (of the draws and of their distance to the mean) and the largest
lag-1 autocorrelation. ``chains.summary()`` computes everything for every site.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch

from ebm.summary import ESS_THRESHOLD, RHAT_THRESHOLD, Summary, summarize

if TYPE_CHECKING:
    from ebm.chains import Chains
    from ebm.samplers.base import Sampler

#: a block with at most this many draws (n_draws * n_chains * sites) is checked site by site
CHECK_DRAWS = 2**20
#: sites of a larger block checked per screen (by R-hat, by autocorrelation)
CHECK_SITES = 8


def separate_targets(chains: Chains) -> bool:
    """Whether the chains are clamped to observed data that differ from chain to chain (one
    data row per chain), so that each chain targets its own conditional distribution."""
    for name in chains.observed:
        rows = chains.draws[name][0]
        if rows.shape[0] > 1 and bool((rows != rows[:1]).any()):
            return True
    return False


def _split_rhat(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Plain split R-hat ``(S,)`` from the two halves ``(h, m, S)`` of every chain."""
    h = first.shape[0]
    means = torch.cat([first.mean(0), second.mean(0)])
    within = torch.cat([first.var(0), second.var(0)]).mean(0)
    return ((h * means.var(0) / within + h - 1) / h).sqrt()


def suspicious_sites(x: torch.Tensor, k: int = CHECK_SITES) -> torch.Tensor:
    """Indices of at most ``2k`` non-constant sites of ``x`` ``(n_draws, n_chains, S)``: the
    ``k`` with the largest plain split R-hat (of ``x`` and of ``|x - mean|``) and the ``k``
    with the largest lag-1 autocorrelation, screened in chunks of ``CHECK_DRAWS`` draws."""
    n, m, n_sites = x.shape
    half = n // 2
    rhat, lag1, varying = [], [], []
    step = max(1, CHECK_DRAWS // (n * m))
    for i in range(0, n_sites, step):
        c = x[..., i : i + step]
        c = c if c.is_floating_point() else c.double()
        dist = (c - c.mean((0, 1))).abs()
        r = torch.maximum(_split_rhat(c[:half], c[n - half :]), _split_rhat(dist[:half], dist[n - half :]))
        centred = c - c.mean(0)
        rho = (centred[1:] * centred[:-1]).sum(0) / centred.square().sum(0)
        rhat.append(r.nan_to_num(nan=-1.0))
        lag1.append(rho.mean(0).nan_to_num(nan=-2.0))
        varying.append(c.amax((0, 1)) > c.amin((0, 1)))
    rhat, lag1, varying = torch.cat(rhat), torch.cat(lag1), torch.cat(varying)
    rhat, lag1 = rhat.masked_fill(~varying, -torch.inf), lag1.masked_fill(~varying, -torch.inf)
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
        "reparameterise (e.g. standardise badly scaled variables), or check the energy for NaN/inf."
    )


def warn_unreliable(chains: Chains, sampler: Sampler | None = None, burn_in: int = 0) -> None:
    """One ``RuntimeWarning`` listing what makes the draws unreliable (divergences, R-hat,
    low ESS of the checked sites, see ``check``) with advice; silent when nothing is."""
    lines = []
    if chains.n_divergent:
        repeated = (chains.divergences >= chains.repeated_divergences).nonzero().flatten().tolist()
        named = f"; chain(s) {repeated[:20]}{' ...' if len(repeated) > 20 else ''} diverged repeatedly" if repeated else ""
        lines.append(
            f"{chains.n_divergent} divergent transition(s) after burn-in (NaN/inf energy or gradient, or a huge energy "
            f"error), all rejected{named}. {divergence_advice(sampler, burn_in)}"
        )
    if chains.n_draws >= 4:
        mixing = check(chains).problems()
        if mixing:
            lines.append(
                f"Chains not mixed: {'; '.join(mixing)} (R-hat should be <= {RHAT_THRESHOLD}, bulk and tail ESS >= "
                f"{ESS_THRESHOLD}). Run longer (more steps, or a longer burn-in); chains.summary() shows every site."
            )
    if lines:
        warnings.warn("\n".join(lines), RuntimeWarning, stacklevel=3)
