"""A sandwich for the log-likelihood: reverse annealing (RAISE) below, forward AIS above.

Forward AIS (``ebm.evaluation.ais``) gives ``Ẑ`` with ``E[Ẑ] = Z``, so ``E[log Ẑ] ≤ log Z``
and ``−F(v) − log Ẑ`` *over*-estimates ``log p(v)`` on average: a stochastic upper bound.

RAISE (Burda, Grosse & Salakhutdinov 2015) anneals the other way, from each data row at
``β = 1`` down to the base. Start at ``v_K = v`` and apply the transitions in reverse,
``v_{k−1} ~ T_k(· | v_k)`` for ``k = K … 1``; then

    log p̂(v) = −F_K(v) − log Z₀ + Σ_{k=0}^{K−1} [log f_k(v_k) − log f_{k+1}(v_k)]

has ``E[p̂(v)] = p_ann(v)``, the likelihood of the *annealing model* (draw ``x₀ ~ p₀`` and
run ``T₁ … T_K`` forward), so ``E[log p̂(v)] ≤ log p_ann(v)``: a stochastic lower bound,
conservative in practice (``p_ann → p`` as the schedule refines). This needs every
``T_k`` to be reversible with respect to ``p_k``: true for the kernels built here, ``h ~
p_k(h | v)`` followed by an exact or Metropolis-adjusted move of ``v`` given ``h`` (Gibbs,
MALA, HMC), or a single reversible sampler when no block is summed out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ebm.evaluation.ais import Annealer, annealing_schedule, default_base, log_mean_exp, summable
from ebm.evaluation.metrics import free_energy_of
from ebm.evaluation.partition import LogPartition, log_partition
from ebm.model import EnergyModel
from ebm.models.independent import Independent
from ebm.models.tempered import Tempered
from ebm.samplers.base import Sampler
from ebm.samplers.gibbs import Gibbs


def _summed_for(path: Tempered, data: Mapping[str, torch.Tensor]) -> str | None:
    latent = [k for k in path.variables if k not in data]
    if not latent:
        return None
    if len(latent) == 1 and path.variables[latent[0]].discrete and summable(path, latent[0], path.base.sample(1)):
        return latent[0]
    raise ValueError(
        f"reverse annealing needs the latent blocks summed out exactly: one discrete block with a factorised "
        f"Bernoulli conditional; {type(path.model).__name__} has latent blocks {latent}"
    )


def raise_log_likelihood(
    model: EnergyModel,
    data: Mapping[str, torch.Tensor],
    n_betas: int = 14_500,
    *,
    schedule: str | torch.Tensor = "sm",
    base: Independent | None = None,
    base_data: Mapping[str, torch.Tensor] | None = None,
    sampler: Sampler | None = None,
    n_runs: int = 1,
    steps_per_beta: int = 1,
    batch_size: int = 10_000,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-row RAISE estimates of ``log p(observed)``: stochastic lower bounds, in nats.

    Args:
        model: the model; blocks absent from ``data`` must be one summable block (RBM: ``h``).
        data: ``{name: (n, *shape)}`` the rows to evaluate.
        n_betas, schedule: as ``ais_log_partition``.
        base: the ``β = 0`` model (``Independent``); default ``Independent.base_rate(model,
            base_data)``: fit it to *training* data, as for forward AIS.
        base_data: data for the base rates (e.g. the training set).
        sampler: the transition (default ``ebm.Gibbs()``); must be reversible (see module doc).
        n_runs: reverse runs per row, combined by log-mean-exp (tighter bound).
        steps_per_beta: sampler steps per temperature.
        batch_size: rows (times runs) annealed at once.
        seed, generator: randomness, as ``ais_log_partition``.

    Returns:
        ``(n,)`` tensor (float64) of estimates.
    """
    if not isinstance(data, Mapping) or not data:
        raise ValueError("data must be a non-empty dict of block name -> tensor, e.g. {'v': X}")
    data = model.as_state(data, what="data")
    n = model.check_state(data, blocks=[k for k in model.variables if k in data], what="data")
    if not isinstance(n_runs, int) or n_runs < 1:
        raise ValueError(f"n_runs must be a positive integer, got {n_runs!r}")
    device = model.device
    generator = generator or torch.Generator(device=device).manual_seed(0 if seed is None else seed)
    betas = annealing_schedule(schedule, n_betas).to(device=device, dtype=model.dtype)
    base = default_base(model, base, base_data)
    path = Tempered(model, 0.0, base)
    annealer = Annealer(path, sampler or Gibbs(), _summed_for(path, data), steps_per_beta)
    rows = {k: v.repeat(n_runs, *([1] * (v.dim() - 1))) for k, v in data.items()}
    total = n * n_runs
    out = []
    with torch.no_grad():
        log_z0 = base.log_partition().double()
        for start in range(0, total, batch_size):
            chunk = {k: v[start : start + batch_size] for k, v in rows.items()}
            m = next(iter(chunk.values())).shape[0]
            state = {**base.sample(m, generator), **chunk}
            sstate = annealer.start(state, generator)
            terms = annealer.terms(sstate)
            # log f_K(v_K) / Z₀ = log p₀(v_K) + log f_K(v_K) − log f₀(v_K)
            log_w = -base.free_energy(chunk).double() - log_z0 + Tempered.log_ratio(terms, betas[-1], betas[0])
            for k in range(betas.numel() - 1, 0, -1):
                sstate = annealer.transition(sstate, terms, betas[k], generator)
                terms = annealer.terms(sstate)
                log_w += Tempered.log_ratio(terms, betas[k - 1], betas[k])
            out.append(log_w)
    estimates = torch.cat(out).reshape(n_runs, n)
    return log_mean_exp(estimates, 0)


@dataclass
class LikelihoodBounds:
    """Mean log-likelihood bounds per row, in nats (see ``log_likelihood_bounds``).

    Attributes:
        lower: mean RAISE estimate (stochastic lower bound).
        lower_stderr: standard error of that mean over rows (it includes the rows' spread,
            so it is the right error bar when ``data`` is a random subset of a test set).
        upper: mean of ``−F(v) − log Ẑ`` with forward AIS ``Ẑ`` (stochastic upper bound).
        upper_stderr: ``log Ẑ``'s standard error (shared by every row).
        log_z: the forward AIS estimate.
        lower_rows: ``(n,)`` per-row RAISE estimates.
        upper_rows: ``(n,)`` per-row ``−F(v) − log Ẑ``.
    """

    lower: float
    lower_stderr: float
    upper: float
    upper_stderr: float
    log_z: LogPartition
    lower_rows: torch.Tensor
    upper_rows: torch.Tensor

    def __str__(self) -> str:
        return (
            f"log-likelihood in [{self.lower:.3f} ± {self.lower_stderr:.3f}, {self.upper:.3f} ± {self.upper_stderr:.3f}] "
            f"nats (RAISE lower, AIS upper; log Z = {float(self.log_z):.3f})"
        )


def log_likelihood_bounds(
    model: EnergyModel,
    data: Mapping[str, torch.Tensor],
    *,
    n_betas: int = 14_500,
    n_runs: int = 100,
    schedule: str | torch.Tensor = "sm",
    base: Independent | None = None,
    base_data: Mapping[str, torch.Tensor] | None = None,
    sampler: Sampler | None = None,
    reverse_betas: int | None = None,
    reverse_runs: int = 1,
    log_z: LogPartition | None = None,
    seed: int | None = 0,
) -> LikelihoodBounds:
    """Sandwich the mean test log-likelihood between RAISE (below) and forward AIS (above).

    Args:
        model: the model (RBM-like: latent blocks summed out exactly).
        data: ``{name: (n, *shape)}`` the test rows.
        n_betas, n_runs, schedule: forward AIS settings (``ais_log_partition``).
        base, base_data: the base model, or the (training) data to fit base rates to; the same
            base serves both directions.
        sampler: the transition kernel (default ``ebm.Gibbs()``).
        reverse_betas: RAISE's number of steps (default ``n_betas``).
        reverse_runs: RAISE runs per row.
        log_z: a forward AIS estimate to reuse instead of computing one.
        seed: seed of both directions.

    Returns:
        ``LikelihoodBounds``; ``str()`` of it reads as an interval.
    """
    data = model.as_state(data, what="data")
    base = default_base(model, base, base_data)
    if log_z is None:
        log_z = log_partition(
            model, "ais", n_betas=n_betas, n_runs=n_runs, schedule=schedule, base=base, sampler=sampler, seed=seed
        )
    with torch.no_grad():
        upper_rows = -free_energy_of(model, data).double() - float(log_z)
    lower_rows = raise_log_likelihood(
        model,
        data,
        reverse_betas or n_betas,
        schedule=schedule,
        base=base,
        sampler=sampler,
        n_runs=reverse_runs,
        seed=None if seed is None else seed + 1,
    )
    n = lower_rows.numel()
    lower_sd = lower_rows.std().item() if n > 1 else math.nan
    return LikelihoodBounds(
        lower=lower_rows.mean().item(),
        lower_stderr=lower_sd / math.sqrt(n),
        upper=upper_rows.mean().item(),
        upper_stderr=log_z.stderr,
        log_z=log_z,
        lower_rows=lower_rows,
        upper_rows=upper_rows,
    )
