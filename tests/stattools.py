"""Statistical helpers for tests: tolerances come from sampling distributions, not tuning."""

from __future__ import annotations

import torch


def chi_square_pvalue(counts: torch.Tensor, probs: torch.Tensor, min_expected: float = 5.0) -> float:
    """Pearson chi-square goodness-of-fit p-value of ``counts`` against ``probs``.

    Cells whose expected count is below ``min_expected`` are pooled into one cell so the
    chi-square approximation holds. The survival function of chi-square with ``df`` degrees
    of freedom is the regularised upper incomplete gamma function Q(df/2, x/2).
    """
    counts = counts.double().flatten()
    probs = probs.double().flatten()
    n = counts.sum()
    expected = n * probs / probs.sum()
    small = expected < min_expected
    if small.any():
        counts = torch.cat([counts[~small], counts[small].sum().unsqueeze(0)])
        expected = torch.cat([expected[~small], expected[small].sum().unsqueeze(0)])
    stat = ((counts - expected) ** 2 / expected).sum()
    df = counts.numel() - 1
    return torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), stat / 2).item()


def state_index(bits: torch.Tensor) -> torch.Tensor:
    """Integer index of each row of 0/1 ``bits`` (least significant bit first), as enumeration orders them."""
    powers = 2 ** torch.arange(bits.shape[-1], device=bits.device)
    return (bits.long() * powers).sum(-1)


def z_threshold(n_tests: int, alpha: float = 1e-3) -> float:
    """Two-sided Bonferroni z threshold: all ``n_tests`` pass with probability >= 1 - alpha."""
    return torch.special.ndtri(torch.tensor(1 - alpha / (2 * n_tests), dtype=torch.float64)).item()


def chi_square_two_sided_pvalue(statistic: float, df: int) -> float:
    """Two-sided p-value of a chi-square(``df``) ``statistic``: twice the smaller tail."""
    a = torch.tensor(df / 2, dtype=torch.float64)
    x = torch.tensor(statistic / 2, dtype=torch.float64)
    return min(1.0, 2 * min(torch.special.gammainc(a, x).item(), torch.special.gammaincc(a, x).item()))
