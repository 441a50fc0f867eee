"""``Summary``: per-block posterior statistics of ``Chains``, printed as a table.

``summarize`` turns draws ``(n_draws, n_chains, *shape)`` into mean, sd, MCSE of the mean
and of the sd, bulk and tail ESS and rank-normalised R-hat (``ebm.diagnostics``), each of
shape ``shape``; ``Summary`` collects these per block (and per scalar function of the state)
together with the sampler's statistics (HMC's per-chain E-BFMI among them), and flags what
makes them unreliable.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ebm import diagnostics

STATISTICS = ("mean", "sd", "mcse", "mcse_sd", "ess", "ess_tail", "rhat")
#: column headers of the printed table, one per statistic
COLUMNS = ("mean", "sd", "mcse", "mcse_sd", "ess_bulk", "ess_tail", "r_hat")
#: chains whose R-hat exceeds this disagree (Vehtari et al. 2021 recommend 1.01)
RHAT_THRESHOLD = 1.01
#: below this many effective draws (bulk or tail, all chains together) the MCSE exceeds a
#: tenth of the sd and ESS and R-hat are themselves unreliable (Vehtari et al. 2021, sec. 4)
ESS_THRESHOLD = 100
#: ``summary.sampler`` keys of the E-BFMI digest (``ebm.HMC``'s ``hamiltonian`` record)
E_BFMI_MIN, E_BFMI_LOW = "min E-BFMI", f"chains E-BFMI < {diagnostics.E_BFMI_THRESHOLD}"
#: what a low E-BFMI means and what to do, shown by the summary and by ``ebm.sample``'s warning
E_BFMI_ADVICE = (
    "one momentum draw moves the energy far less than its spread over the posterior, so these chains explore the "
    "energy by a slow random walk (a funnel's neck, as in a centred hierarchical model); the energy, not the "
    "trajectory length or step size, limits mixing: reparameterise (write hierarchical models non-centred, "
    "theta = mu + tau * eta; docs: Many chains, one warm-up)"
)
#: ``summary.sampler`` keys for the sampler's per-step records
SAMPLER_LABELS = {
    "accept_prob": "mean accept prob",  # E[min(1, exp(-dH))]: the Metropolis acceptance probability
    "accepted": "accepted fraction",  # the fraction of proposals actually accepted (a coin flip on the above)
    "step_size": "step size",
}


def summarize(x: torch.Tensor, separate_targets: bool = False) -> dict[str, torch.Tensor]:
    """Mean, sd, MCSE, ESS and R-hat of draws ``x`` ``(n_draws, n_chains, *shape)``.

    Args:
        x: the draws.
        separate_targets: the chains sample different distributions (each clamped to its own
            observed data row). R-hat, which compares chains, is then not computed (NaN);
            ESS is the sum of the chains' own ESS, MCSE of the mean combines the chains' own
            MCSEs, and MCSE of the sd is not defined (NaN).

    Returns:
        ``{"mean", "sd", "mcse" (of the mean), "mcse_sd", "ess" (bulk), "ess_tail", "rhat"}``,
        each a tensor of shape ``shape`` (float64 for integer draws). ESS, MCSE and R-hat are
        NaN with fewer than 4 draws and for constant sites.
    """
    x = torch.as_tensor(x)
    if x.dim() < 2:
        raise ValueError(f"draws must be laid out as (n_draws, n_chains, ...), got shape {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"a summary needs at least 2 draws per chain, got {x.shape[0]}")
    x = x.detach()
    x = x if x.is_floating_point() else x.double()
    out = {"mean": x.mean((0, 1)), "sd": x.flatten(0, 1).std(0)}
    if not separate_targets:
        d = diagnostics.compute(x, ("mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "rhat"))
        names = {"mcse": "mcse_mean", "mcse_sd": "mcse_sd", "ess": "ess_bulk", "ess_tail": "ess_tail", "rhat": "rhat"}
        return out | {key: d[name] for key, name in names.items()}
    # each chain on its own: chains become sites of a one-chain tensor
    own = diagnostics.compute(x.unsqueeze(1), ("mcse_mean", "ess_bulk", "ess_tail"))
    nan = torch.full_like(out["mean"], float("nan"))
    defined = ~own["ess_bulk"].isnan().all(0)  # NaN only where the site is constant in every chain
    return out | {
        "mcse": torch.where(defined, own["mcse_mean"].nan_to_num().square().sum(0).sqrt() / x.shape[1], nan),
        "mcse_sd": nan,
        "ess": torch.where(defined, own["ess_bulk"].nansum(0), nan),
        "ess_tail": torch.where(defined, own["ess_tail"].nansum(0), nan),
        "rhat": nan,
    }


def sampler_statistics(stats: dict[str, torch.Tensor]) -> dict[str, float | int]:
    """Digest of the per-draw sampler records in ``chains.stats``: means (of the finite values)
    and the count of divergences, labelled by ``SAMPLER_LABELS`` (``accept_prob`` -> ``mean
    accept prob``: the mean Metropolis acceptance probability; ``accepted`` -> ``accepted
    fraction``: the fraction of proposals accepted), other records as ``mean {key}``. HMC's
    ``hamiltonian`` record (4 draws or more) gives each chain's E-BFMI
    (``ebm.diagnostics.e_bfmi``), digested as its minimum over chains (``E_BFMI_MIN``) and the
    number of chains below ``E_BFMI_THRESHOLD`` or undefined (``E_BFMI_LOW``)."""
    out: dict[str, float | int] = {}
    for key, value in stats.items():
        if key == "hamiltonian":
            out.update(e_bfmi_digest(value))
        elif key == "divergent":
            out["divergences"] = int(value.sum())
        elif key in SAMPLER_LABELS:
            out[SAMPLER_LABELS[key]] = value.double().mean().item()
        else:
            # divergent transitions record inf/NaN energy errors; average the finite ones
            finite = value.double()[value.double().isfinite()]
            out[f"mean {key}"] = finite.mean().item() if finite.numel() else float("nan")
    return out


def e_bfmi_digest(hamiltonian: torch.Tensor) -> dict[str, float | int]:
    """``{E_BFMI_MIN: worst chain, E_BFMI_LOW: chains below the threshold}`` from the
    Hamiltonian at the draws ``(n_draws, n_chains)``; empty with fewer than 4 draws. A chain
    whose E-BFMI is undefined (NaN/inf energy) counts as low: none is hidden."""
    if hamiltonian.shape[0] < 4:
        return {}
    values = diagnostics.e_bfmi(hamiltonian)
    finite = values[values.isfinite()]
    worst = finite.min().item() if finite.numel() else float("nan")
    return {E_BFMI_MIN: worst, E_BFMI_LOW: int((~(values >= diagnostics.E_BFMI_THRESHOLD)).sum())}


def e_bfmi_problem(sampler: dict[str, float | int], n_chains: int) -> str | None:
    """One line naming the chains with a low E-BFMI (from ``e_bfmi_digest``), or ``None``."""
    low = sampler.get(E_BFMI_LOW, 0)
    if not low:
        return None
    return f"E-BFMI < {diagnostics.E_BFMI_THRESHOLD} in {low} of {n_chains} chains (min {sampler[E_BFMI_MIN]:.3g})"


def flags(entry: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Boolean masks (the entry's shape) of what makes a summary entry unreliable.

    ``"constant"``: draws that never change (no ESS, MCSE or R-hat; not flagged otherwise);
    ``"rhat"``: R-hat above ``RHAT_THRESHOLD`` or infinite; ``"ess"``: bulk or tail ESS below
    ``ESS_THRESHOLD``, or undefined at a site that is not constant (a NaN draw, too few draws).
    """
    constant = entry["sd"] == 0
    rhat = entry["rhat"]
    low = ~(torch.minimum(entry["ess"], entry["ess_tail"]) >= ESS_THRESHOLD)
    return {"constant": constant, "rhat": ~constant & ((rhat > RHAT_THRESHOLD) | rhat.isinf()), "ess": ~constant & low}


class Summary(dict):
    """``{name: {"mean", "sd", "mcse", "mcse_sd", "ess", "ess_tail", "rhat": tensors of the block's shape}}``.

    ``"ess"`` is the bulk ESS and ``"mcse"`` the MCSE of the mean (see ``ebm.diagnostics``).
    Entries are the sampled blocks, ``"energy"`` and any scalar functions of the state that
    were asked for (shape ``()``). Sampler statistics (acceptance, divergences, step size,
    and for HMC the lowest E-BFMI over chains and how many are below 0.3) are in ``.sampler``.
    Printing shows a table: one row per site for small blocks, and the minimum / median /
    maximum over the non-constant sites for large ones (with the number of constant sites);
    R-hat above 1.01 or infinite is starred and ESS below 100 marked ``!``; a low E-BFMI gets
    a ``!`` line with advice.

    ``separate_targets`` records that the chains were clamped to different observed rows, so
    R-hat was not computed.
    """

    max_rows_per_block = 10

    def __init__(
        self,
        blocks: dict[str, dict[str, torch.Tensor]],
        sampler: dict[str, float | int] | None = None,
        n_draws: int = 0,
        n_chains: int = 0,
        separate_targets: bool = False,
    ):
        super().__init__(blocks)
        self.sampler = dict(sampler or {})
        self.n_draws, self.n_chains = n_draws, n_chains
        self.separate_targets = separate_targets

    @property
    def max_rhat(self) -> float:
        """Largest R-hat over every site of every entry (NaN sites ignored)."""
        values = [v["rhat"].double().reshape(-1) for v in self.values()]
        values = torch.cat(values) if values else torch.empty(0)
        values = values[~values.isnan()]
        return values.max().item() if values.numel() else float("nan")

    def problems(self) -> list[str]:
        """One line per entry with flagged sites (R-hat, low ESS) and for divergences; empty
        when nothing is flagged."""
        lines = []
        for name, entry in self.items():
            f = flags(entry)
            n = f["constant"].numel()
            where = "" if not entry["mean"].dim() else " at {k} of " + f"{n} sites"
            if f["rhat"].any():
                worst = entry["rhat"][f["rhat"]].max().item()
                count = where.format(k=int(f["rhat"].sum()))
                lines.append(f"{name}: R-hat > {RHAT_THRESHOLD}{count} (max {worst:.3g})")
            if f["ess"].any():
                low = torch.minimum(entry["ess"], entry["ess_tail"])[f["ess"]].min().item()
                lines.append(f"{name}: ESS < {ESS_THRESHOLD}{where.format(k=int(f['ess'].sum()))} (min {low:.0f})")
        if self.sampler.get("divergences"):
            lines.append(f"{self.sampler['divergences']} divergent transitions")
        low_energy = e_bfmi_problem(self.sampler, self.n_chains)
        if low_energy:
            lines.append(low_energy)
        return lines

    def __str__(self) -> str:
        width = max([16, *(len(k) + 14 for k in self)])
        header = f"{'':<{width}}" + "".join(f"{c:>11}" for c in COLUMNS[:-1]) + f"{COLUMNS[-1]:>9}"
        lines = [f"{self.n_draws} draws x {self.n_chains} chains", header]
        marks = {"rhat": False, "ess": False}
        for name, entry in self.items():
            flat = {k: entry[k].detach().double().cpu().reshape(-1) for k in STATISTICS}
            f = {k: v.cpu().reshape(-1) for k, v in flags(entry).items()}
            for k in marks:
                marks[k] |= bool(f[k].any())
            shape = tuple(entry["mean"].shape)
            n = flat["mean"].numel()
            if n <= self.max_rows_per_block:
                for i in range(n):
                    label = name if not shape else f"{name}[{', '.join(map(str, np.unravel_index(i, shape)))}]"
                    values = [flat[k][i].item() for k in STATISTICS]
                    lines.append(_row(label, width, values, bool(f["rhat"][i]), bool(f["ess"][i]), bool(f["constant"][i])))
                continue
            varying = ~f["constant"]
            n_constant = n - int(varying.sum())
            note = f"; {n_constant} constant, left out below" if n_constant else ""
            counts = "".join(f", {int(f[k].sum())} flagged {m}" for k, m in (("rhat", "*"), ("ess", "!")) if f[k].any())
            lines.append(f"{name} ({n} sites{note}{counts})")
            for how in ("min", "median", "max"):
                values = [_reduce(flat[k][varying], how) for k in STATISTICS]
                star = how == "max" and bool(f["rhat"].any())
                low = how == "min" and bool(f["ess"].any())
                lines.append(_row(f"  {how}", width, values, star, low, False))
        if self.sampler:
            lines.append("sampler")
            for key, value in self.sampler.items():
                shown = f"{value:.4g}" if isinstance(value, float) else str(value)
                lines.append(f"  {key:<{width - 2}}{shown:>11}")
        if marks["rhat"]:
            lines.append(f"* r_hat > {RHAT_THRESHOLD} or infinite: the chains disagree; run longer, look for separate modes")
        if marks["ess"]:
            lines.append(f"! ess_bulk or ess_tail < {ESS_THRESHOLD}: too few effective draws to trust these; run longer")
        if self.sampler.get("divergences"):
            lines.append(
                f"! {self.sampler['divergences']} divergent transitions: the sampler could not follow the target's "
                "curvature somewhere, so means and sds may be biased even where r_hat and ess look fine "
                "(docs: Continuous sampling, 'When fixed-length HMC is not enough')"
            )
        low_energy = e_bfmi_problem(self.sampler, self.n_chains)
        if low_energy:
            lines.append(f"! {low_energy}: {E_BFMI_ADVICE}")
        if self.sampler.get("mean unstable"):
            lines.append("! unadjusted Langevin blew up (energy errors > 1000 nats): these draws mean nothing")
        if self.separate_targets:
            lines.append(
                "r_hat not computed: each chain is clamped to its own observed data row, so chains target different "
                "distributions; ess and mcse combine each chain's own estimates"
            )
        if 0 < self.n_draws < 4:
            lines.append("fewer than 4 draws per chain: no ESS, MCSE or R-hat")
        return "\n".join(lines)

    __repr__ = __str__


def _reduce(x: torch.Tensor, how: str) -> float:
    x = x[~x.isnan()]
    if not x.numel():
        return float("nan")
    return {"min": x.min, "median": x.median, "max": x.max}[how]().item()


def _row(label: str, width: int, values: list[float], star: bool, low: bool, constant: bool) -> str:
    mean, sd, mcse, mcse_sd, ess, ess_tail, rhat = values
    counts = "".join(f"{'nan' if math.isnan(v) else f'{v:.0f}':>11}" for v in (ess, ess_tail))
    mark = ("*" if star else "") + ("!" if low else "")
    text = f"{label:<{width}}{mean:>11.4g}{sd:>11.4g}{mcse:>11.3g}{mcse_sd:>11.3g}{counts}{rhat:>8.3f}{mark:<2}"
    return (text + " constant" if constant else text).rstrip()
