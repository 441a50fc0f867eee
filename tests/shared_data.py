"""Where the tests find the shared data files (MNIST), as laid out for CI."""

import os
from pathlib import Path

import pytest


def shared_data() -> Path | None:
    """$EBM_DATA, else the shared/data folder beside the repository; ``None`` without MNIST there."""
    candidates = [os.environ.get("EBM_DATA"), Path(__file__).resolve().parents[2] / "shared" / "data"]
    for c in candidates:
        if c and (Path(c) / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
            return Path(c)
    return None


DATA = shared_data()
needs_mnist = pytest.mark.skipif(DATA is None, reason="MNIST IDX files not found ($EBM_DATA/mnist or ../shared/data/mnist)")
