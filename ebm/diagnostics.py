"""MCMC diagnostics on tensors laid out as ``(n_draws, n_chains, *shape)``.

The diagnostics of record are those of Vehtari, Gelman, Simpson, Carpenter and Bürkner
(2021), "Rank-normalization, folding, and localization: an improved R-hat", as reported by
Stan, ArviZ and posterior, written here in torch so that they run batched over the sites of a
block, on the draws' device:

- ``ess(x, "bulk")``: ESS of the rank-normalised split chains (the centre of the distribution);
- ``ess(x, "tail")``: the smaller ESS of the indicators ``x <= q05`` and ``x <= q95``;
- ``ess(x, "mean")``: ESS of the raw split chains, the one behind the MCSE of the mean;
- ``rhat(x)``: the larger of the rank-normalised split R-hat and the rank-normalised split
  R-hat of the draws folded about their median (which catches chains that differ in spread);
- ``mcse(x)``: MCSE of the mean, ``sd / sqrt(ess(x, "mean"))``; ``mcse(x, method="sd")``:
  MCSE of the standard deviation, by the delta method on ``E[(x - mean)^2]`` as ArviZ does;
- ``e_bfmi(h)``: per chain, the energy Bayesian fraction of missing information of HMC's
  Hamiltonian at the draws (Betancourt 2016), as Stan and ArviZ's ``bfmi``.

Every ESS uses Geyer's initial monotone sequence on FFT autocovariances with the integrated
autocorrelation time bounded below, ``tau >= 1 / log10(n_draws * n_chains)`` (as Stan and
ArviZ), so an ESS is positive and at most ``N log10 N`` even for antithetic chains. Results
match ArviZ 0.23 (``arviz.ess``, ``rhat``, ``mcse``) to rounding, with two documented
differences: a site whose draws are all equal gets NaN (as posterior does; ArviZ reports the
number of draws as its ESS), and R-hat of a single chain is the split R-hat of its two halves
(ArviZ returns NaN). Sites with a NaN draw get NaN.

Sites are processed in chunks of at most ``WORKSPACE`` draws, so whole blocks (e.g. 784 RBM
pixels x 1000 draws x 1000 chains) fit in memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import cached_property

import torch
from pyro.ops import stats

#: draws (``n_draws * n_chains * sites``) processed at once; temporaries take ~20x as many bytes x 8
WORKSPACE = 2**22
#: ArviZ calls a site constant when max - min is below ``numpy.finfo(float).resolution``
_CONSTANT = 1e-15
#: Blom's offset in the rank -> normal-score back-transform, as in Vehtari et al. 2021
_BLOM = 3 / 8
ESS_METHODS = ("bulk", "tail", "mean")
MCSE_METHODS = ("mean", "sd")


def _float(x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() < 2:
        raise ValueError(f"diagnostics need draws laid out as (n_draws, n_chains, ...), got shape {tuple(x.shape)}")
    return x if x.is_floating_point() else x.double()


def _need_draws(x: torch.Tensor, what: str) -> None:
    if x.shape[0] < 4:
        raise ValueError(f"{what} needs at least 4 draws per chain, got {x.shape[0]}")


def _fast_length(n: int) -> int:
    """Smallest ``2^a 3^b 5^c >= n`` (a size the FFT handles quickly)."""
    best = 1 << max(0, (n - 1).bit_length())
    p3 = 1
    while p3 < best:
        p35 = p3
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 5
        p3 *= 3
    return best


def _split(x: torch.Tensor) -> torch.Tensor:
    """``(S, m, n)`` -> ``(S, 2m, n // 2)``: first and last halves as separate chains (middle draw dropped)."""
    half = x.shape[2] // 2
    return torch.cat([x[..., :half], x[..., x.shape[2] - half :]], dim=1)


def _ranked(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled ranks of each site's draws ``(S, m, n)`` (ties share their average rank, 1-based),
    same shape as ``x``, and the sorted draws ``(S, m n)``: one sort, no search."""
    flat = x.reshape(x.shape[0], -1)
    ordered, order = flat.sort(dim=1)
    n = flat.shape[1]
    pos = torch.arange(n, device=x.device).expand_as(order)
    first = torch.ones_like(order, dtype=torch.bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    last = torch.ones_like(first)
    last[:, :-1] = first[:, 1:]
    start = torch.where(first, pos, 0).cummax(1).values
    end = torch.where(last, pos, n - 1).flip(1).cummin(1).values.flip(1)
    rank = torch.empty_like(flat).scatter_(1, order, (start + end).to(flat.dtype) / 2 + 1)
    return rank.reshape(x.shape), ordered


def _normal_scores(rank: torch.Tensor) -> torch.Tensor:
    """Ranks ``(S, m, n)`` -> normal scores with Blom's offset, as Vehtari et al. 2021 (and ArviZ)."""
    n = rank[0].numel()
    return torch.special.ndtri((rank - _BLOM) / (n - 2 * _BLOM + 1))


def _quantile(ordered: torch.Tensor, p: float) -> torch.Tensor:
    """Type-7 quantile of sorted rows ``(S, N)``, written as scipy's ``mquantiles(alphap=1, betap=1)``."""
    n = ordered.shape[1]
    aleph = n * p + (1 - p)
    k = math.floor(min(max(aleph, 1), n - 1))
    gamma = min(max(aleph - k, 0.0), 1.0)
    return (1 - gamma) * ordered[:, k - 1] + gamma * ordered[:, k]


def _geyer_ess(y: torch.Tensor) -> torch.Tensor:
    """ESS ``(S,)`` of chains ``y`` ``(S, m, n)`` (float64), as ArviZ's ``_ess``.

    Pairs ``P_k = rho_2k + rho_2k+1`` of the multi-chain autocorrelation are summed up to the
    first non-positive pair (Geyer's initial positive sequence), made non-increasing by a
    cumulative minimum (initial monotone sequence); the first dropped pair contributes its
    even term. A site whose values are all equal gets ``n m`` (ArviZ's convention, needed for
    quantile indicators that never change).
    """
    n_sites, m, n = y.shape
    total = n * m
    chain_mean = y.mean(2, keepdim=True)
    size = _fast_length(2 * n)
    # the FFT runs along the contiguous last dimension, zero-padded in place: (S, m, size)
    padded = y.new_zeros(n_sites, m, size)
    torch.sub(y, chain_mean, out=padded[..., :n])
    spectrum = torch.view_as_real(torch.fft.rfft(padded, dim=-1))
    power = spectrum[..., 0].square().addcmul_(spectrum[..., 1], spectrum[..., 1])
    # the inverse transform is linear: averaging the power over chains first averages the
    # chains' autocovariances with one inverse FFT per site instead of one per chain
    acov = torch.fft.irfft(power.mean(1), n=size, dim=-1)[:, :n].T / n
    mean_var = acov[0] * n / (n - 1)
    var_plus = mean_var * (n - 1) / n
    if m > 1:
        var_plus = var_plus + chain_mean[..., 0].var(1)
    rho = 1 - (mean_var - acov) / var_plus
    rho[0] = 1.0
    last = max(0, math.ceil((n - 4) / 2))  # the loop never looks past pair `last`
    pairs = rho[: 2 * (last + 1)].reshape(last + 1, 2, -1).sum(1)
    stop = pairs <= 0
    stop[last] = True
    first = stop.to(torch.uint8).argmax(0)  # index of the first dropped (or last examined) pair
    kept = torch.arange(last + 1, device=y.device)[:, None] < first
    monotone = pairs.cummin(0).values
    even = rho[2 * first, torch.arange(rho.shape[1], device=y.device)]
    tail = torch.where(pairs.gather(0, first[None])[0] >= 0, even, even.clamp_min(0))
    tau = -1 + 2 * (monotone * kept).sum(0) + tail
    tau = tau.clamp_min(1 / math.log10(total))
    ess = total / tau
    low, high = y.reshape(n_sites, -1).aminmax(dim=1)
    constant = (high - low) < _CONSTANT
    ess = torch.where(constant, torch.full_like(ess, total), ess)
    return torch.where(rho.isnan().any(0) & ~constant, torch.full_like(ess, float("nan")), ess)


def _rhat_of(z: torch.Tensor) -> torch.Tensor:
    """Classic R-hat ``(S,)`` of (already split) chains ``z`` ``(S, m, n)``."""
    n = z.shape[2]
    between = n * z.mean(2).var(1)
    within = z.var(2).mean(1)
    return ((between / within + n - 1) / n).sqrt()


class _Chunk:
    """Draws of a chunk of sites ``(S, m, n)`` (float64, each chain's draws contiguous) with the
    sorts and split chains that several statistics share, each computed once."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    @cached_property
    def split(self) -> torch.Tensor:
        return _split(self.x)

    @cached_property
    def _split_ranked(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _ranked(self.split)

    @cached_property
    def z_split(self) -> torch.Tensor:
        return _normal_scores(self._split_ranked[0])

    @cached_property
    def sorted_draws(self) -> torch.Tensor:
        """All draws of each site in order ``(S, n m)`` (for quantiles of the unsplit draws)."""
        if self.x.shape[2] % 2 == 0:  # the split chains hold every draw
            return self._split_ranked[1]
        return self.x.reshape(self.x.shape[0], -1).sort(dim=1).values

    def ess_bulk(self) -> torch.Tensor:
        return _geyer_ess(self.z_split)

    def ess_tail(self) -> torch.Tensor:
        low, high = (
            _geyer_ess(_split((self.x <= _quantile(self.sorted_draws, p)[:, None, None]).to(self.x.dtype)))
            for p in (0.05, 0.95)
        )
        return torch.minimum(low, high)

    @cached_property
    def _ess_mean(self) -> torch.Tensor:
        return _geyer_ess(self.split)

    def ess_mean(self) -> torch.Tensor:
        return self._ess_mean

    def rhat(self) -> torch.Tensor:
        ordered = self._split_ranked[1]
        n = ordered.shape[1]
        median = (ordered[:, (n - 1) // 2] + ordered[:, n // 2]) / 2
        folded = _normal_scores(_ranked((self.split - median[:, None, None]).abs())[0])
        # A two-valued site split exactly in half folds to a constant, whose R-hat is 0/0:
        # fmax then keeps the bulk R-hat (as ArviZ's max(bulk, tail) does).
        return torch.fmax(_rhat_of(self.z_split), _rhat_of(folded))

    def mcse_mean(self) -> torch.Tensor:
        return self.x.reshape(self.x.shape[0], -1).std(1) / self._ess_mean.sqrt()

    def mcse_sd(self) -> torch.Tensor:
        square = (self.x - self.x.mean((1, 2), keepdim=True)) ** 2
        var = square.mean((1, 2))
        var_of_var = ((square**2).mean((1, 2)) - var**2) / _geyer_ess(_split(square))
        return (var_of_var / var / 4).sqrt()


#: chains with an E-BFMI below this explore the energy too slowly (Stan's threshold, Betancourt 2016)
E_BFMI_THRESHOLD = 0.3


def e_bfmi(hamiltonian: torch.Tensor) -> torch.Tensor:
    """Energy Bayesian fraction of missing information of each chain (Betancourt 2016, "Diagnosing
    suboptimal cotangent disintegrations in Hamiltonian Monte Carlo"), shape ``(n_chains,)``.

    ``Σ_t (H_t − H_{t−1})² / Σ_t (H_t − H̄)²`` over a chain's draws, where ``H_t`` is the
    Hamiltonian (nats) at draw ``t``, as Stan and ArviZ compute it. The numerator measures how
    far one momentum refresh moves the energy, the denominator the energy's spread over the
    posterior: about 1 when a refresh can reach any energy level in one transition (a Gaussian
    target), below ``E_BFMI_THRESHOLD`` when the chain explores the energy by a slow random
    walk that no trajectory length fixes (a funnel: reparameterise). With ``thin > 1``, ``H_t``
    is ``thin`` steps apart.

    Args:
        hamiltonian: ``(n_draws, n_chains)``, e.g. ``chains.stats["hamiltonian"]`` of ``ebm.HMC``.

    Returns:
        ``(n_chains,)`` float64; NaN for a chain with fewer than 2 draws, a constant energy or a
        NaN/inf value.
    """
    h = torch.as_tensor(hamiltonian).detach().double()
    if h.dim() != 2:
        raise ValueError(f"e_bfmi needs a Hamiltonian laid out as (n_draws, n_chains), got shape {tuple(h.shape)}")
    if h.shape[0] < 2:
        return torch.full(h.shape[1:], float("nan"), dtype=h.dtype, device=h.device)
    steps = h.diff(dim=0).square().sum(0)
    spread = (h - h.mean(0)).square().sum(0)
    return torch.where(spread > 0, steps / spread, torch.full_like(spread, float("nan")))


#: every statistic ``compute`` knows
STATISTICS = ("ess_bulk", "ess_tail", "ess_mean", "rhat", "mcse_mean", "mcse_sd")


def compute(x: torch.Tensor, statistics: Iterable[str] = STATISTICS) -> dict[str, torch.Tensor]:
    """Several diagnostics of ``x`` ``(n_draws, n_chains, *shape)`` in one pass over its sites.

    Args:
        x: draws; with fewer than 4 per chain every statistic is NaN.
        statistics: names among ``"ess_bulk", "ess_tail", "ess_mean", "rhat", "mcse_mean",
            "mcse_sd"``.

    Returns:
        ``{name: tensor of shape x.shape[2:]}`` in ``x``'s floating dtype (float64 for integer
        draws); NaN for constant sites and for sites with a NaN draw.
    """
    x = _float(x)
    names = list(statistics)
    unknown = [s for s in names if s not in STATISTICS]
    if unknown:
        raise ValueError(f"unknown statistics {unknown}; choose from {list(STATISTICS)}")
    sites = x.detach().reshape(x.shape[0], x.shape[1], -1)
    if x.shape[0] < 4:  # too few draws to split into chains of 2 (ArviZ's minimum too)
        return {s: torch.full(x.shape[2:], float("nan"), dtype=x.dtype, device=x.device) for s in names}
    per_chunk = max(1, WORKSPACE // (x.shape[0] * x.shape[1]))
    parts: dict[str, list[torch.Tensor]] = {s: [] for s in names}
    for i in range(0, sites.shape[2], per_chunk):
        part = sites[..., i : i + per_chunk]
        # one transposing copy puts each chain's draws on the contiguous last dimension
        chunk = torch.empty(part.shape[::-1], dtype=torch.float64, device=x.device).copy_(part.permute(2, 1, 0))
        low, high = chunk.reshape(chunk.shape[0], -1).aminmax(dim=1)
        undefined = chunk.isnan().any((1, 2)) | ((high - low) < _CONSTANT)
        work = _Chunk(chunk)
        for s in names:
            parts[s].append(getattr(work, s)().masked_fill(undefined, float("nan")))
    return {s: torch.cat(v).reshape(x.shape[2:]).to(x.dtype) for s, v in parts.items()}


def ess(x: torch.Tensor, method: str = "bulk") -> torch.Tensor:
    """Effective sample size over all chains, shape ``x.shape[2:]``.

    Args:
        x: draws ``(n_draws, n_chains, *shape)``, at least 2 per chain (NaN with 2 or 3).
        method: ``"bulk"`` (rank-normalised split chains: how well the centre of the
            distribution is explored), ``"tail"`` (the smaller ESS of the 5% and 95% quantile
            indicators: the tails), or ``"mean"`` (raw split chains: the ESS behind ``mcse``).

    Returns:
        ESS in draws, positive (at most ``N log10 N`` for ``N`` draws in all); NaN for
        constant sites.
    """
    if method not in ESS_METHODS:
        raise ValueError(f"ess method must be one of {ESS_METHODS}, got {method!r}")
    x = _float(x)
    if x.shape[0] < 2:
        raise ValueError(f"ESS needs at least 2 draws per chain, got {x.shape[0]}")
    return compute(x, [f"ess_{method}"])[f"ess_{method}"]


def rhat(x: torch.Tensor) -> torch.Tensor:
    """Rank-normalised split R-hat, the larger of the bulk and folded versions, ``x.shape[2:]``.

    Values above 1.01 (Vehtari et al. 2021) flag chains that disagree in location or spread;
    ``inf`` means every chain is stuck at its own value. NaN for constant sites.
    """
    x = _float(x)
    _need_draws(x, "split R-hat")
    return compute(x, ["rhat"])["rhat"]


def autocorrelation(x: torch.Tensor) -> torch.Tensor:
    """Autocorrelation along the draws of each chain, same shape as ``x`` (lag on dim 0)."""
    return stats.autocorrelation(_float(x), dim=0)


def mcse(x: torch.Tensor, effective_size: torch.Tensor | None = None, method: str = "mean") -> torch.Tensor:
    """Monte-Carlo standard error of the mean or of the sd of the draws, shape ``x.shape[2:]``.

    Args:
        x: draws ``(n_draws, n_chains, ...)`` (NaN with fewer than 4 per chain).
        effective_size: for ``method="mean"``, an ESS already computed (``ess(x, "mean")``);
            the MCSE is then ``sd / sqrt(effective_size)``.
        method: ``"mean"`` (``sd / sqrt(ess(x, "mean"))``) or ``"sd"`` (delta method on the
            variance, as ArviZ's ``mcse(method="sd")``).
    """
    if method not in MCSE_METHODS:
        raise ValueError(f"mcse method must be one of {MCSE_METHODS}, got {method!r}")
    x = _float(x)
    if method == "mean" and effective_size is not None:
        return x.flatten(0, 1).std(0) / effective_size.sqrt()
    return compute(x, [f"mcse_{method}"])[f"mcse_{method}"]
