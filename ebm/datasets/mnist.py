"""MNIST from the four IDX gz files: found locally, else downloaded once with checksum verification.

Files are looked up in ``root`` when given; otherwise in ``$EBM_DATA/mnist`` and then in the
user cache (``$XDG_CACHE_HOME/ebm/mnist``, default ``~/.cache/ebm/mnist``), where missing
files are downloaded. Every file is verified before use: gzip integrity, the IDX magic
number, the header's sizes against the payload, and the SHA-256 of the decompressed payload
(the payload, not the gz file, so that any faithful re-compression of MNIST is accepted).
A file that fails a check raises ``ValueError`` naming it; bad data is never returned.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch

#: the two files of each split: (images, labels)
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

#: SHA-256 of each file's decompressed IDX payload
SHA256 = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: download locations, tried in order (the first is the mirror torchvision uses; LeCun's
#: original page often refuses scripted downloads)
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://yann.lecun.com/exdb/mnist/",
)

BINARIZE = ("threshold", "stochastic", "none")

# IDX magic: two zero bytes, a type code (0x08 = unsigned byte) and the number of dimensions.
_UBYTE = 0x08


def _gunzip(path: Path) -> bytes:
    with open(path, "rb") as f:
        try:
            return gzip.GzipFile(fileobj=f).read()
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path} is not a readable gzip file (corrupt or truncated): {e}") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes into an array of the shape in its header.

    Raises:
        ValueError: the file is not valid gzip, is truncated, has a bad magic number or a
            payload whose length differs from the header's dimensions.
    """
    return _parse_idx(_gunzip(Path(path)), Path(path))


def _parse_idx(raw: bytes, path: Path) -> np.ndarray:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE or raw[3] < 1:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated: the IDX header needs {header} bytes, the file has {len(raw)}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise ValueError(f"{path} is {what}: header shape {shape} needs {expected} bytes, the payload has {len(raw)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _verify(raw: bytes, name: str, where: str | Path, hint: str = "") -> None:
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SHA256[name]:
        raise ValueError(
            f"{where} failed its checksum (SHA-256 of the decompressed data is {digest}, expected {SHA256[name]}){hint}"
        )


def cache_dir() -> Path:
    """The per-user download directory: ``$XDG_CACHE_HOME/ebm/mnist`` or ``~/.cache/ebm/mnist``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ebm" / "mnist"


def _candidate_dirs(root: str | os.PathLike | None) -> list[Path]:
    if root is not None:
        return [Path(root)]
    dirs = []
    if os.environ.get("EBM_DATA"):
        dirs.append(Path(os.environ["EBM_DATA"]) / "mnist")
    dirs.append(cache_dir())
    return dirs


def download(name: str, directory: str | os.PathLike, mirrors: tuple[str, ...] | None = None) -> Path:
    """Download MNIST file ``name`` into ``directory``, verify its checksum, and return its path.

    The file is written to a temporary name and renamed only after it verifies, so a failed
    or interrupted download never leaves a file that later loads.

    Raises:
        RuntimeError: no mirror could be reached (offline); the message says where to put the files.
        ValueError: a download arrived but failed its checksum.
    """
    if name not in SHA256:
        raise ValueError(f"unknown MNIST file {name!r}; expected one of {sorted(SHA256)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    errors = []
    for mirror in mirrors or MIRRORS:
        url = mirror + name
        fd, tmp = tempfile.mkstemp(prefix=name + ".", suffix=".part", dir=directory)
        tmp = Path(tmp)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            _verify(_gunzip(tmp), name, url)
            os.replace(tmp, target)
            return target
        except (urllib.error.URLError, OSError) as e:
            errors.append(f"{url}: {getattr(e, 'reason', e)}")
        finally:
            tmp.unlink(missing_ok=True)
    raise RuntimeError(
        f"could not download MNIST file {name} ({'; '.join(errors)}). If this machine is offline, copy the four "
        f"IDX gz files into {directory} or a folder 'mnist' under $EBM_DATA, or pass root=..."
    )


def locate(split: str, root: str | os.PathLike | None = None, download_missing: bool = True) -> tuple[Path, Path]:
    """Paths of the (images, labels) files of ``split``, downloading them when absent.

    Looks in ``root`` when given, else in ``$EBM_DATA/mnist`` then the user cache; missing
    files are downloaded into ``root`` or the user cache.
    """
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    dirs = _candidate_dirs(root)
    for d in dirs:
        paths = tuple(d / name for name in FILES[split])
        if all(p.is_file() for p in paths):
            return paths
    target = dirs[-1] if root is None else dirs[0]
    if not download_missing:
        raise FileNotFoundError(f"MNIST {split} files {FILES[split]} not found in {', '.join(map(str, dirs))}")
    return tuple(target / n if (target / n).is_file() else download(n, target) for n in FILES[split])


def _load_verified(path: Path) -> np.ndarray:
    raw = _gunzip(path)
    array = _parse_idx(raw, path)
    _verify(raw, path.name, path, "; delete it to download it again")
    return array


def mnist(
    split: str = "train",
    root: str | os.PathLike | None = None,
    binarize: str | bool = "threshold",
    threshold: float = 0.5,
    seed: int = 0,
    download: bool = True,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST handwritten digits, 28x28 pixels flattened to 784.

    Args:
        split: ``"train"`` (60,000 rows) or ``"test"`` (10,000 rows), the standard split.
        root: folder holding the four IDX gz files (downloaded there when absent); default:
            ``$EBM_DATA/mnist``, then the user cache (see ``cache_dir``).
        binarize: ``"threshold"`` (``pixel / 255 > threshold``), ``"stochastic"`` (each pixel
            an independent Bernoulli draw with probability ``pixel / 255``, from
            ``numpy.random.default_rng(seed)``: a fixed binarization, as in Salakhutdinov &
            Murray 2008) or ``"none"`` (grey levels scaled to [0, 1]). ``True`` means
            ``"threshold"``, ``False`` means ``"none"``.
        threshold: the cut for ``binarize="threshold"``, on the [0, 1] scale.
        seed: the seed of ``binarize="stochastic"``.
        download: fetch missing files (default); otherwise raise ``FileNotFoundError``.
        dtype: floating dtype of the images (default ``torch.get_default_dtype()``).

    Returns:
        ``(images, labels)``: images ``(n, 784)`` with values in {0, 1} or [0, 1], labels ``(n,)`` int64.

    Raises:
        ValueError: a bad argument, or a file that is corrupt, truncated or fails its checksum.
        RuntimeError: files are missing and cannot be downloaded (offline).
    """
    mode = {True: "threshold", False: "none"}[binarize] if isinstance(binarize, bool) else binarize
    if mode not in BINARIZE:
        raise ValueError(f"binarize must be one of {BINARIZE}, got {binarize!r}")
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    image_path, label_path = locate(split, root, download_missing=download)
    images, labels = (_load_verified(p) for p in (image_path, label_path))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{image_path} and {label_path} do not form an MNIST split: shapes {images.shape}, {labels.shape}")
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    if mode == "threshold":
        x = x > threshold
    elif mode == "stochastic":
        x = np.random.default_rng(seed).random(x.shape, dtype=np.float32) < x
    return torch.as_tensor(x, dtype=dtype or torch.get_default_dtype()), torch.as_tensor(labels.astype(np.int64))
