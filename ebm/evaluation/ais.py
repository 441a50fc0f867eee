"""Annealed importance sampling (Neal 2001) for ``log Z`` of any ``EnergyModel``.

Runs anneal along the geometric path ``p_β ∝ p^β p₀^(1−β)`` (``ebm.models.tempered``) from a
tractable base ``p₀`` (``ebm.models.Independent``: exact samples and ``log Z₀``) through
``β₀ = 0 < β₁ < … < β_K = 1``. Each run starts at ``x₀ ~ p₀`` and collects

    log w = Σ_{k=1..K} [log f_k(x_{k−1}) − log f_{k−1}(x_{k−1})],   x_k ~ T_k(· | x_{k−1}),

where ``T_k`` leaves ``p_k`` invariant: the model's own sampler (Gibbs for an RBM, MALA or
HMC for continuous blocks) driving the ``Tempered`` view at ``β_k``. ``E[w] = Z / Z₀``, so
``log Ẑ = log Z₀ + log mean w`` (biased low in expectation: a stochastic lower bound).

When a discrete block ``h`` has a factorised Bernoulli conditional (the RBM's hidden layer),
it is summed out of the weights (``f_k = exp(−F_k)``, Salakhutdinov & Murray 2008) and drawn
exactly from ``p_k(h | rest)`` at the start of each transition, the other blocks then move
by the sampler with ``h`` clamped: for an RBM, ``h ~ p_k(h | v)`` then ``v ~ p_k(v | h)``.
All runs are one batch (dim 0) on the model's device; nothing syncs the host in the loop.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import replace

import torch
from torch.distributions import Bernoulli

from ebm import distributed
from ebm.evaluation.partition import LogPartition, UnreliableEstimate
from ebm.model import EnergyModel, State
from ebm.models.independent import Independent
from ebm.models.tempered import PathTerms, Tempered
from ebm.samplers.base import Sampler, SamplerState
from ebm.samplers.gibbs import Gibbs, draw
from ebm.samplers.tempering import refreshed

#: the three pieces of Salakhutdinov & Murray's (2008) schedule: (start, end, number of βs)
SM_PIECES = ((0.0, 0.5, 500), (0.5, 0.9, 4000), (0.9, 1.0, 10_000))

#: AIS warns (``UnreliableEstimate``) when fewer runs than this carry the weight (see ``weight_problem``)
MIN_EFFECTIVE_RUNS = 10


def annealing_schedule(kind: str | torch.Tensor = "sm", n_betas: int = 14_500) -> torch.Tensor:
    """Inverse temperatures ``β₀ = 0 < … < β_K = 1`` as a float64 tensor of ``n_betas + 1`` values.

    Args:
        kind: ``"linear"`` (evenly spaced), ``"sm"`` (Salakhutdinov & Murray 2008: 500 βs on
            [0, 0.5), 4,000 on [0.5, 0.9), 10,000 on [0.9, 1], scaled in proportion when
            ``n_betas`` ≠ 14,500), ``"geometric"`` (log-spaced from 1e-4, then 0 prepended)
            or an increasing tensor from 0 to 1 (returned as float64).
        n_betas: the number of steps ``K`` (ignored for a tensor).
    """
    if isinstance(kind, torch.Tensor):
        betas = kind.detach().double().cpu().flatten()
        if betas.numel() < 2 or betas[0] != 0 or betas[-1] != 1 or not bool((betas.diff() > 0).all()):
            raise ValueError("a custom schedule must increase strictly from 0 to 1")
        return betas
    if not isinstance(n_betas, int) or n_betas < 1:
        raise ValueError(f"n_betas must be a positive integer, got {n_betas!r}")
    if kind == "linear":
        return torch.linspace(0, 1, n_betas + 1, dtype=torch.float64)
    if kind == "geometric":
        return torch.cat([torch.zeros(1, dtype=torch.float64), torch.logspace(-4, 0, n_betas, dtype=torch.float64)])
    if kind == "sm":
        total = sum(n for _, _, n in SM_PIECES)
        counts = [max(1, round(n * n_betas / total)) for _, _, n in SM_PIECES]
        counts[-1] = max(1, n_betas - sum(counts[:-1]))
        ends = [(a, b) for a, b, _ in SM_PIECES]
        pieces = [torch.linspace(a, b, n + 1, dtype=torch.float64)[:-1] for (a, b), n in zip(ends, counts, strict=True)]
        return torch.cat([*pieces, torch.ones(1, dtype=torch.float64)])
    raise ValueError(f"unknown schedule {kind!r}; use 'linear', 'sm', 'geometric' or a tensor of betas")


def summable(path: Tempered, name: str, probe: State) -> bool:
    """Whether ``path`` sums block ``name`` out of ``probe`` (a factorised Bernoulli conditional
    given the other blocks; a model's only block has none to condition on)."""
    if len(probe) < 2:
        return False
    try:
        with torch.no_grad():
            path.terms({k: v for k, v in probe.items() if k != name})
    except NotImplementedError:
        return False
    return True


def choose_summed(path: Tempered, base: Independent, summed: str | None) -> str | None:
    """The block AIS sums out: ``summed`` checked, or for ``"auto"`` the last discrete block
    that can be (``None`` when none can: the weights then use full energies)."""
    probe = base.sample(1)
    if summed == "auto":
        for name in reversed(list(path.variables)):
            if path.variables[name].discrete and summable(path, name, probe):
                return name
        return None
    if summed is None:
        return None
    if summed not in path.variables:
        raise ValueError(f"summed={summed!r} is not a block; the blocks are {list(path.variables)}")
    if not (path.variables[summed].discrete and summable(path, summed, probe)):
        raise ValueError(f"block '{summed}' cannot be summed out: it needs a factorised Bernoulli conditional")
    return summed


class Annealer:
    """The transitions and weights shared by forward AIS and reverse annealing (RAISE).

    Args:
        path: ``Tempered(model, β, base)``; its β is set at each transition.
        sampler: the transition kernel at each β (driving ``path``).
        summed: the block summed out of the weights and drawn exactly, or ``None``.
        steps: sampler steps per temperature.
    """

    def __init__(self, path: Tempered, sampler: Sampler, summed: str | None, steps: int = 1):
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps_per_beta must be a positive integer, got {steps!r}")
        self.path, self.sampler, self.summed, self.steps = path, sampler, summed, steps

    def start(self, state: State, generator: torch.Generator) -> SamplerState:
        """The sampler state over ``state`` (every block), the summed block clamped."""
        observed = () if self.summed is None else (self.summed,)
        with torch.no_grad():
            return self.sampler.init(self.path, state, observed, generator)

    def terms(self, sstate: SamplerState) -> PathTerms:
        """``Tempered.terms`` at the chains' current state (the summed block left out)."""
        return self.path.terms({k: v for k, v in sstate.state.items() if k != self.summed})

    def transition(
        self, sstate: SamplerState, terms: PathTerms, beta: torch.Tensor, generator: torch.Generator
    ) -> SamplerState:
        """``T_β``: the summed block drawn exactly from ``p_β(h | rest)`` (its logits come from
        ``terms``, computed at the same state), then the sampler's steps at ``β``."""
        self.path.beta = beta
        if self.summed is not None:
            domain = self.path.variables[self.summed]
            logits = beta * terms.logits + (1 - beta) * terms.base_logits
            h = draw(Bernoulli(logits=logits, validate_args=False), domain, generator)
            state = {**sstate.state, self.summed: h.reshape(-1, *domain.shape)}
            sstate = replace(sstate, state=state)
        sstate = refreshed(self.sampler, self.path, sstate)
        for _ in range(self.steps):
            sstate, _ = self.sampler.step(self.path, sstate, generator)
        return sstate


def log_mean_exp(log_w: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``log mean exp`` along ``dim``."""
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


def weight_summary(log_w: torch.Tensor, z_sigmas: float = 3.0) -> dict[str, float]:
    """Estimate, standard error, interval and ESS from ``(n_runs,)`` log-weights.

    ``log mean w`` with the delta-method standard error ``sd(w) / (√n · mean(w))``; the
    interval is ``log(mean w ± z_sigmas · sd(w)/√n)`` (Salakhutdinov & Murray report ±3σ;
    the lower end is ``−inf`` when the band reaches 0); ``ess = (Σw)² / Σw²``;
    ``var_log_w`` is the sample variance of ``log w`` (0 for one run).
    """
    log_w = log_w.double()
    n = log_w.numel()
    r = (log_w - log_w.max()).exp()
    mean = r.mean()
    sd = r.std() if n > 1 else torch.zeros((), dtype=r.dtype, device=r.device)
    se = sd / math.sqrt(n)
    shift = log_w.max()
    lower = (mean - z_sigmas * se).clamp_min(0).log() + shift
    upper = (mean + z_sigmas * se).log() + shift
    var_log_w = log_w.var() if n > 1 else torch.zeros((), dtype=r.dtype, device=r.device)
    values = [mean.log() + shift, se / mean, lower, upper, r.sum().square() / r.square().sum(), var_log_w]
    estimate, stderr, lo, hi, ess, var_log_w = torch.stack(values).cpu().tolist()
    return {"estimate": estimate, "stderr": stderr, "interval": (lo, hi), "ess": ess, "var_log_w": var_log_w}


def weight_problem(summary: Mapping[str, float], n_runs: int) -> str | None:
    """Why AIS weights summarised by ``weight_summary`` cannot be trusted, or ``None``.

    ``E[Ẑ] = Z`` but ``E[log Ẑ] ≤ log Z`` (Jensen): the weights are heavy-tailed, and when the
    schedule is too short for the model (too few βs, or a base far from it) the runs miss
    the rare large weights that carry ``Z``. ``log Ẑ`` then falls below ``log Z``, often by
    many nats, and the standard error, computed from the same runs, looks small. Two checks:

    - the sample ESS ``(Σw)²/Σw²``: fewer than ``MIN_EFFECTIVE_RUNS`` runs carry the estimate;
    - the log-normal ESS ``n · exp(−Var log w)``: ``log w`` is a sum of many small increments,
      close to normal (Neal 2001), and for ``log w ~ N(μ, σ²)`` the weights' relative
      variance is ``exp(σ²) − 1``, so ``n`` runs are worth ``≈ n · exp(−σ²)``. Unlike the
      sample ESS this does not need the tail to have been seen: ``σ²`` is estimated well
      from the bulk of the runs. When ``n · exp(−σ²)`` is small, the weights that carry
      ``Z`` lie ``σ`` standard deviations up the tail of ``log w``, beyond the ``≈ √(2 ln n)``
      that ``n`` runs reach, and the sample ESS, computed without them, overstates.

    The bar is ``min(MIN_EFFECTIVE_RUNS, n_runs / 2)``, so that a handful of runs on an
    easy model does not warn.
    """
    bar = min(MIN_EFFECTIVE_RUNS, n_runs / 2)
    lognormal = n_runs * math.exp(-summary["var_log_w"])
    if summary["ess"] >= bar and lognormal >= bar:
        return None
    return (
        f"AIS is unreliable here: the {n_runs} runs are worth {summary['ess']:.1f} (ESS of the weights) and "
        f"{lognormal:.2g} (n·exp(-Var log w), Var log w = {summary['var_log_w']:.3g}) effective runs, below "
        f"{bar:g}. log Z is then likely biased low (E[log Z_hat] <= log Z), log-likelihoods biased high, "
        f"and the stderr too small; use more betas (n_betas), a base fitted to the data (data=...), or more runs"
    )


def default_base(model: EnergyModel, base: Independent | None, data: Mapping[str, torch.Tensor] | None) -> Independent:
    """``base`` checked and moved to the model's device and dtype, or else the base-rate model
    of ``data`` (``Independent.base_rate``)."""
    if base is not None:
        if not isinstance(base, Independent):
            raise TypeError(f"base must be an ebm.models.Independent (closed-form log Z), got {type(base).__name__}")
        if base.variables != model.variables:
            raise ValueError(f"base has blocks {base.variables} but the model has {model.variables}")
        return base.to(device=model.device, dtype=model.dtype)
    return Independent.base_rate(model, data)


def ais_log_partition(
    model: EnergyModel,
    n_betas: int = 14_500,
    n_runs: int = 100,
    *,
    schedule: str | torch.Tensor = "sm",
    base: Independent | None = None,
    data: Mapping[str, torch.Tensor] | None = None,
    sampler: Sampler | None = None,
    summed: str | None = "auto",
    steps_per_beta: int = 1,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> LogPartition:
    """``log Z`` by annealed importance sampling; ``ebm.log_partition(model, method="ais", ...)``.

    Args:
        model: any ``EnergyModel``.
        n_betas: number of intermediate steps ``K`` (the schedule scales to it).
        n_runs: independent annealing runs (one batch).
        schedule: see ``annealing_schedule``: ``"sm"`` (default), ``"linear"``, ``"geometric"``
            or a tensor of βs.
        base: the ``β = 0`` model, an ``ebm.models.Independent``. Default: fitted to ``data``
            by ``Independent.base_rate`` (the base-rate model of Salakhutdinov & Murray);
            without data, uniform discrete blocks and ``N(0, 1)`` real ones.
        data: ``{name: (n, *shape)}`` training data for the base rates.
        sampler: the transition at each β (default ``ebm.Gibbs()``; pass ``ebm.Langevin`` or
            ``ebm.HMC`` with a fixed step size for ``Real`` blocks without conditionals).
        summed: the block summed out of the weights; ``"auto"`` picks one when possible.
        steps_per_beta: sampler steps per temperature.
        seed: seed of the runs (ignored when ``generator`` is given).
        generator: a ``torch.Generator`` on the model's device (under a process group, this
            rank's own: seed it differently on each rank).

    Under a process group of several ranks (``ebm.distributed``) the ``n_runs`` runs are split
    across the ranks (``distributed.local_count``), rank ``r`` drawing its runs from
    ``seed + 1_000_003 r`` (``distributed.shard_seed``); the log-weights are gathered and every
    rank returns the same estimate over all runs (log-mean-exp, stderr included): exactly what
    one process gets from the concatenated log-weights of those per-rank seeds.

    Returns:
        ``LogPartition`` (a float, nats) with ``.stderr`` (delta method), ``.interval`` (±3
        standard errors of ``mean w``, on the log scale), ``.ess`` of the weights, and
        ``.info``: ``log_weights`` ``(n_runs,)``, ``log_z0``, ``n_betas``, ``summed``, ``var_log_w``.

    Bias: ``E[Ẑ] = Z`` makes ``log Ẑ`` a stochastic lower bound, ``E[log Ẑ] ≤ log Z``, so a
    schedule too short for the model gives ``log Z`` too low (and log-likelihoods computed
    with it too high) with a misleadingly small ``stderr``. Warns ``UnreliableEstimate`` when
    the runs' effective number is too small for the estimate to be trusted (``weight_problem``).
    """
    if not isinstance(n_runs, int) or n_runs < 1:
        raise ValueError(f"n_runs must be a positive integer, got {n_runs!r}")
    device = model.device
    rank, size = distributed.world()
    if size > 1 and n_runs < size:
        raise ValueError(f"n_runs={n_runs} is fewer than the {size} ranks: use at least one run per rank")
    local_runs = distributed.local_count(n_runs, rank, size)
    seed = distributed.shard_seed(0 if seed is None else seed, rank)
    generator = generator or torch.Generator(device=device).manual_seed(seed)
    betas = annealing_schedule(schedule, n_betas).to(device=device, dtype=model.dtype)
    base = default_base(model, base, data)
    path = Tempered(model, 0.0, base)
    annealer = Annealer(path, sampler or Gibbs(), choose_summed(path, base, summed), steps_per_beta)
    with torch.no_grad():
        sstate = annealer.start(base.sample(local_runs, generator), generator)
        log_w = torch.zeros(local_runs, dtype=torch.float64, device=device)
        for k in range(1, betas.numel()):
            terms = annealer.terms(sstate)
            log_w += Tempered.log_ratio(terms, betas[k], betas[k - 1])
            if k < betas.numel() - 1:
                sstate = annealer.transition(sstate, terms, betas[k], generator)
        log_z0 = base.log_partition().double()
    log_w = distributed.gather_rows(log_w, "AIS log-weight gather")
    summary = weight_summary(log_w)
    if not math.isfinite(summary["estimate"]):
        raise FloatingPointError("AIS weights are not finite; check the model's energy and the sampler's step size")
    problem = weight_problem(summary, n_runs)
    if problem is not None:
        warnings.warn(problem, UnreliableEstimate, stacklevel=3)
    return LogPartition(
        summary["estimate"] + log_z0.item(),
        summary["stderr"],
        "ais",
        interval=tuple(x + log_z0.item() for x in summary["interval"]),
        ess=summary["ess"],
        log_weights=log_w,
        log_z0=log_z0.item(),
        n_betas=betas.numel() - 1,
        summed=annealer.summed,
        var_log_w=summary["var_log_w"],
    )
