import gzip
import importlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from shared_data import DATA, needs_mnist

from ebm.datasets import bars_and_stripes, digits, mnist

# The package re-exports the function mnist under the module's name, so import the module by path.
mnist_module = importlib.import_module("ebm.datasets.mnist")


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_gz(path: Path, payload: bytes) -> Path:
    path.write_bytes(gzip.compress(payload))
    return path


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    # A download must never touch the user's real cache from a test.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


# ---------------------------------------------------------------- digits and bars-and-stripes


def test_digits_splits_and_binarization():
    x, y = digits()
    assert x.shape == (1797, 64) and y.shape == (1797,) and x.dtype == torch.get_default_dtype()
    assert set(x.unique().tolist()) == {0.0, 1.0}
    train, test = digits("train")[0], digits("test")[0]
    assert train.shape == (1500, 64) and test.shape == (297, 64)
    # The split is a partition of the rows, the same every call.
    rows = {tuple(r) for r in x.tolist()}
    assert {tuple(r) for r in torch.cat([train, test]).tolist()} == rows
    assert torch.equal(digits("test")[0], test)
    grey = digits(binarize=False)[0]
    assert 0.0 <= grey.min() and grey.max() <= 1.0 and torch.equal(grey > 0.5, x.bool())
    with pytest.raises(ValueError, match="split"):
        digits("validation")


def test_bars_and_stripes_count():
    x = bars_and_stripes(4)
    assert x.shape == (30, 16) and len({tuple(r) for r in x.tolist()}) == 30


# ---------------------------------------------------------------- MNIST on the real files


@needs_mnist
def test_mnist_test_split_binarizations():
    root = DATA / "mnist"
    x, y = mnist("test", root=root)
    assert x.shape == (10_000, 784) and y.shape == (10_000,) and y.dtype == torch.int64
    assert set(x.unique().tolist()) == {0.0, 1.0} and set(y.unique().tolist()) == set(range(10))
    grey, _ = mnist("test", root=root, binarize="none")
    assert 0.0 <= grey.min() and grey.max() == 1.0 and torch.equal(x.bool(), grey > 0.5)
    a, _ = mnist("test", root=root, binarize="stochastic", seed=3)
    b, _ = mnist("test", root=root, binarize="stochastic", seed=3)
    c, _ = mnist("test", root=root, binarize="stochastic", seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Stochastic binarization is unbiased: its mean matches the grey-level mean.
    assert abs(a.mean().item() - grey.mean().item()) < 1e-3


@needs_mnist
def test_mnist_train_split_found_through_ebm_data(monkeypatch):
    monkeypatch.setenv("EBM_DATA", str(DATA))
    x, y = mnist("train")
    assert x.shape == (60_000, 784) and y[:5].tolist() == [5, 0, 4, 1, 9]


@needs_mnist
def test_mnist_download_verifies_and_installs(tmp_path):
    target = tmp_path / "dl"
    path = mnist_module.download("t10k-labels-idx1-ubyte.gz", target, mirrors=((DATA / "mnist").as_uri() + "/",))
    assert path == target / "t10k-labels-idx1-ubyte.gz"
    assert mnist_module.read_idx(path).shape == (10_000,)
    assert [p.name for p in target.iterdir()] == [path.name]


# ---------------------------------------------------------------- MNIST: bad arguments and bad files


def test_mnist_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="split"):
        mnist("validation", root=tmp_path)
    with pytest.raises(ValueError, match="binarize"):
        mnist("test", root=tmp_path, binarize="otsu")
    with pytest.raises(ValueError, match="threshold"):
        mnist("test", root=tmp_path, threshold=2.0)
    with pytest.raises(FileNotFoundError, match="t10k"):
        mnist("test", root=tmp_path, download=False)


def test_read_idx_round_trip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_gz(tmp_path / "x.gz", idx_bytes(array))
    np.testing.assert_array_equal(mnist_module.read_idx(path), array)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "magic"),
        (bytes([0, 0, 0x0D, 1]) + struct.pack(">I", 2) + bytes(8), "magic"),  # float IDX, not bytes
        (bytes([0, 0, 0x08, 3]) + struct.pack(">I", 2), "truncated"),  # header cut short
        (idx_bytes(np.zeros((5, 4), np.uint8))[:-3], "truncated"),  # payload cut short
        (idx_bytes(np.zeros((5, 4), np.uint8)) + b"\0", "longer"),
    ],
    ids=["empty", "float-type", "short-header", "short-payload", "extra-bytes"],
)
def test_read_idx_rejects_malformed_payloads(tmp_path, payload, message):
    path = write_gz(tmp_path / "bad.gz", payload)
    with pytest.raises(ValueError, match=message):
        mnist_module.read_idx(path)


def test_read_idx_rejects_broken_gzip(tmp_path):
    good = gzip.compress(idx_bytes(np.ones((50, 7, 7), np.uint8) * 3))
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(good[: len(good) // 2])
    not_gzip = tmp_path / "plain.gz"
    not_gzip.write_bytes(idx_bytes(np.ones((2, 2), np.uint8)))
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    corrupt = tmp_path / "corrupt.gz"
    corrupt.write_bytes(bytes(flipped))
    for path in (truncated, not_gzip, corrupt):
        with pytest.raises(ValueError, match="gzip"):
            mnist_module.read_idx(path)


def fake_split(directory: Path, n: int = 6) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    images, labels = mnist_module.FILES["test"]
    write_gz(directory / images, idx_bytes(np.full((n, 28, 28), 200, np.uint8)))
    write_gz(directory / labels, idx_bytes(np.arange(n, dtype=np.uint8)))
    return directory


def test_mnist_rejects_well_formed_files_with_wrong_checksum(tmp_path):
    root = fake_split(tmp_path / "mnist")
    with pytest.raises(ValueError, match="checksum"):
        mnist("test", root=root)


def test_download_with_wrong_checksum_leaves_nothing(tmp_path):
    mirror = fake_split(tmp_path / "mirror")
    target = tmp_path / "cache"
    with pytest.raises(ValueError, match="checksum"):
        mnist_module.download("t10k-labels-idx1-ubyte.gz", target, mirrors=(mirror.as_uri() + "/",))
    assert list(target.iterdir()) == []


def test_offline_download_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_module, "MIRRORS", ((tmp_path / "nowhere").as_uri() + "/",))
    monkeypatch.delenv("EBM_DATA", raising=False)
    with pytest.raises(RuntimeError, match="could not download MNIST"):
        mnist("test")
    assert list((tmp_path / "cache" / "ebm" / "mnist").iterdir()) == []
