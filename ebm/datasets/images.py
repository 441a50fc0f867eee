"""Small binary image datasets that ship with ``ebm`` or are generated exactly."""

from __future__ import annotations

import itertools
from importlib import resources

import numpy as np
import torch

#: rows of the digits data that form the test split: a fixed permutation (numpy
#: ``default_rng(0)``) of the 1797 rows, its last 297 rows; the first 1500 are the training split
DIGITS_TEST_SIZE = 297


def digits(
    split: str = "all", binarize: bool = True, threshold: float = 8.0, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8x8 handwritten digits (UCI optdigits test set, 1797 rows, pixels 0..16), offline.

    Args:
        split: ``"all"`` (1797 rows in the original order), ``"train"`` (1500) or ``"test"``
            (297): a fixed split by a seeded permutation, ``numpy.random.default_rng(0)``.
        binarize: map pixels to {0, 1} as ``pixel > threshold``; otherwise scale to [0, 1].
        threshold: binarization threshold on the 0..16 scale (default 8).
        dtype: floating dtype of the images (default ``torch.get_default_dtype()``).

    Returns:
        ``(images, labels)``: images ``(n, 64)``, labels ``(n,)`` int64.
    """
    with resources.files("ebm.datasets").joinpath("data/digits.npz").open("rb") as f:
        raw = np.load(f)
        images, labels = raw["images"].reshape(-1, 64).astype(np.float64), raw["labels"].astype(np.int64)
    if split != "all":
        order = np.random.default_rng(0).permutation(len(images))
        splits = {"train": order[:-DIGITS_TEST_SIZE], "test": order[-DIGITS_TEST_SIZE:]}
        if split not in splits:
            raise ValueError(f"split must be 'all', 'train' or 'test', got {split!r}")
        images, labels = images[splits[split]], labels[splits[split]]
    x = (images > threshold) if binarize else images / 16.0
    return torch.as_tensor(x, dtype=dtype or torch.get_default_dtype()), torch.as_tensor(labels)


def bars_and_stripes(n: int = 4, dtype: torch.dtype | None = None) -> torch.Tensor:
    """All distinct ``n x n`` bars-and-stripes patterns, shape ``(2**(n+1) - 2, n*n)``.

    Each pattern has every row constant (stripes) or every column constant (bars); the all-0
    and all-1 images are both, so there are ``2 * 2**n - 2`` patterns, and the best possible
    mean log-likelihood of a model of the uniform distribution over them is ``-log`` of that.
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    patterns = set()
    for bits in itertools.product((0.0, 1.0), repeat=n):
        rows = np.repeat(np.array(bits)[:, None], n, axis=1)
        patterns.add(tuple(rows.reshape(-1)))
        patterns.add(tuple(rows.T.reshape(-1)))
    return torch.tensor(sorted(patterns), dtype=dtype or torch.get_default_dtype())
