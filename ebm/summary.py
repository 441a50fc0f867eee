"""``Summary``: per-block posterior statistics of ``Chains``, printed as a table.

``summarize`` turns draws ``(n_draws, n_chains, *shape)`` into mean, sd, MCSE, ESS and
split R-hat, each of shape ``shape``; ``Summary`` collects these per block (and per
scalar function of the state) together with the sampler's statistics.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ebm import diagnostics

STATISTICS = ("mean", "sd", "mcse", "ess", "rhat")
#: chains whose split R-hat exceeds this disagree (Vehtari et al. 2021 recommend 1.01)
RHAT_THRESHOLD = 1.01


def summarize(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean, sd, MCSE, ESS and split R-hat of draws ``x`` ``(n_draws, n_chains, *shape)``.

    Returns:
        ``{"mean", "sd", "mcse", "ess", "rhat"}``, each a tensor of shape ``shape`` (float64
        for integer draws). R-hat is NaN with fewer than 4 draws; statistics of a constant
        site are NaN where they are undefined (ESS, R-hat).
    """
    x = torch.as_tensor(x)
    if x.dim() < 2:
        raise ValueError(f"draws must be laid out as (n_draws, n_chains, ...), got shape {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"a summary needs at least 2 draws per chain, got {x.shape[0]}")
    x = x.detach()
    x = x if x.is_floating_point() else x.double()
    enough = x.shape[0] >= 4
    ess = diagnostics.ess(x)
    return {
        "mean": x.mean((0, 1)),
        "sd": x.flatten(0, 1).std(0),
        "mcse": diagnostics.mcse(x, ess),
        "ess": ess,
        "rhat": diagnostics.rhat(x) if enough else torch.full(x.shape[2:], float("nan"), dtype=x.dtype, device=x.device),
    }


def sampler_statistics(stats: dict[str, torch.Tensor]) -> dict[str, float | int]:
    """Digest of the per-draw sampler records in ``chains.stats``: means (of the finite
    values), and counts of divergences; the names follow the records (``accept_prob`` ->
    ``acceptance``)."""
    out: dict[str, float | int] = {}
    for key, value in stats.items():
        if key == "divergent":
            out["divergences"] = int(value.sum())
        elif key == "accept_prob":
            out["acceptance"] = value.double().mean().item()
        elif key == "accepted":
            out["accept rate"] = value.double().mean().item()
        elif key == "step_size":
            out["step size"] = value.double().mean().item()
        else:
            # divergent transitions record inf/NaN energy errors; average the finite ones
            finite = value.double()[value.double().isfinite()]
            out[f"mean {key}"] = finite.mean().item() if finite.numel() else float("nan")
    return out


class Summary(dict):
    """``{name: {"mean", "sd", "mcse", "ess", "rhat": tensors of the block's shape}}``.

    Entries are the sampled blocks, ``"energy"`` and any scalar functions of the state that
    were asked for (shape ``()``). Sampler statistics (acceptance, divergences, step size)
    are in ``.sampler``. Printing shows a table: one row per site for small blocks, and
    the minimum / median / maximum over sites for large ones; R-hat above 1.01 is starred.
    """

    max_rows_per_block = 10

    def __init__(
        self,
        blocks: dict[str, dict[str, torch.Tensor]],
        sampler: dict[str, float | int] | None = None,
        n_draws: int = 0,
        n_chains: int = 0,
    ):
        super().__init__(blocks)
        self.sampler = dict(sampler or {})
        self.n_draws, self.n_chains = n_draws, n_chains

    @property
    def max_rhat(self) -> float:
        """Largest split R-hat over every site of every entry (NaN sites ignored)."""
        values = [v["rhat"].double().reshape(-1) for v in self.values()]
        values = torch.cat(values) if values else torch.empty(0)
        values = values[~values.isnan()]
        return values.max().item() if values.numel() else float("nan")

    def __str__(self) -> str:
        width = max([16, *(len(k) + 14 for k in self)])
        header = f"{'':<{width}}" + "".join(f"{s:>11}" for s in ("mean", "sd", "mcse", "ess")) + f"{'r_hat':>9}"
        lines = [f"{self.n_draws} draws x {self.n_chains} chains", header]
        flagged = False
        for name, entry in self.items():
            flat = {k: entry[k].detach().double().cpu().reshape(-1) for k in STATISTICS}
            shape = tuple(entry["mean"].shape)
            n = flat["mean"].numel()
            if n <= self.max_rows_per_block:
                for i in range(n):
                    label = name if not shape else f"{name}[{', '.join(map(str, np.unravel_index(i, shape)))}]"
                    row, star = _row(label, width, *(flat[k][i].item() for k in STATISTICS))
                    lines.append(row)
                    flagged |= star
            else:
                lines.append(f"{name} ({n} sites)")
                for how in ("min", "median", "max"):
                    values = [_reduce(flat[k], how) for k in STATISTICS]
                    row, star = _row(f"  {how}", width, *values)
                    lines.append(row)
                    flagged |= star
        if self.sampler:
            lines.append("sampler")
            for key, value in self.sampler.items():
                shown = f"{value:.4g}" if isinstance(value, float) else str(value)
                lines.append(f"  {key:<{width - 2}}{shown:>11}")
        if flagged:
            lines.append(f"* r_hat > {RHAT_THRESHOLD}: the chains disagree; run longer or look for separate modes")
        return "\n".join(lines)

    __repr__ = __str__


def _reduce(x: torch.Tensor, how: str) -> float:
    x = x[~x.isnan()]
    if not x.numel():
        return float("nan")
    return {"min": x.min, "median": x.median, "max": x.max}[how]().item()


def _row(label: str, width: int, mean: float, sd: float, mcse: float, ess: float, rhat: float) -> tuple[str, bool]:
    star = math.isfinite(rhat) and rhat > RHAT_THRESHOLD
    ess_text = "nan" if math.isnan(ess) else f"{ess:.0f}"
    text = f"{label:<{width}}{mean:>11.4g}{sd:>11.4g}{mcse:>11.3g}{ess_text:>11}{rhat:>8.3f}{'*' if star else ' '}"
    return text, star
