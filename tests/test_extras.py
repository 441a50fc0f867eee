"""Packaging: the core needs no extra; each extra (arviz, tensorboard, sklearn) works through
its own entry point; the ArviZ export speaks both ArviZ 0.x and 1.x."""

import ast
import importlib
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import ebm
from ebm.chains import Chains

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = {"arviz": "arviz", "tensorboard": "tensorboard", "sklearn": "scikit-learn", "scipy": "scipy"}


def project() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11; the import checks below need no TOML
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_license_is_an_spdx_string_and_extras_are_declared():
    meta = project()
    assert meta["license"] == "MIT"
    extras = meta["optional-dependencies"]
    assert {"arviz", "tensorboard", "sklearn", "dev"} <= set(extras)
    assert any(
        req.startswith("ebm[") and all(e in req for e in ("arviz", "tensorboard", "sklearn")) for req in extras["dev"]
    )
    core = " ".join(meta["dependencies"]).lower()
    assert not any(package in core for package in OPTIONAL.values())


def test_core_modules_import_no_optional_package():
    """No module that ``import ebm`` loads imports an extra's package at module level (the
    extras' imports sit inside the functions that need them); ``ebm.sklearn`` is loaded on
    first use only."""
    offenders = []
    for path in sorted((ROOT / "ebm").rglob("*.py")):
        if path.name == "sklearn.py":
            continue
        for node in ast.parse(path.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if isinstance(node, ast.ImportFrom) and node.module == "ebm":
                names += [f"ebm.{a.name}" for a in node.names]
            offenders += [
                f"{path.name}: {n}"
                for n in names
                if n.split(".")[0] in OPTIONAL or n in ("ebm.sklearn", "torch.utils.tensorboard")
            ]
    assert offenders == []


def small_chains() -> Chains:
    """Short chains: only the export's layout is tested (their mixing warning is expected)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return ebm.sample(ebm.RBM(4, 3, init_std=0.5, seed=0), ebm.Gibbs(), n_chains=4, n_steps=20, seed=0, progress=False)


def test_sklearn_extra():
    pytest.importorskip("sklearn")
    X = (np.random.default_rng(0).random((40, 6)) < 0.5).astype(np.float32)
    features = ebm.sklearn.BernoulliRBM(n_components=3, n_iter=1, random_state=0).fit_transform(X)
    assert features.shape == (40, 3) and features.dtype == np.float32


def test_tensorboard_extra(tmp_path):
    pytest.importorskip("tensorboard")
    callback = ebm.callbacks.TensorBoard(tmp_path)
    ebm.fit(ebm.RBM(4, 2, seed=0), {"v": torch.ones(8, 4)}, epochs=1, batch_size=4, callbacks=[callback])
    callback.close()
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_arviz_extra():
    pytest.importorskip("arviz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        data = small_chains().to_arviz()
    assert tuple(data["posterior"]["v"].shape) == (4, 20, 4)


def test_arviz_1_api(monkeypatch):
    """ArviZ 1.x (Python >= 3.12) is ``arviz_base`` re-exported: ``from_dict`` takes one dict of
    groups and returns a ``DataTree``. With ``arviz_base`` installed, test the export against it
    as the ``arviz`` module of a 1.x release."""
    base = pytest.importorskip("arviz_base")
    one = types.ModuleType("arviz")
    one.__version__, one.from_dict = "1.0.0", base.from_dict
    monkeypatch.setitem(sys.modules, "arviz", one)
    data = small_chains().to_arviz()
    assert type(data).__name__ == "DataTree"
    assert tuple(data["posterior"]["v"].shape) == (4, 20, 4)
    assert {"lp"} <= set(data["sample_stats"].data_vars)


@pytest.mark.parametrize(
    ("module", "extra", "use"),
    [
        ("sklearn", "sklearn", lambda: importlib.import_module("ebm.sklearn")),
        ("torch.utils.tensorboard", "tensorboard", lambda: ebm.callbacks.TensorBoard("unused")),
        ("arviz", "arviz", lambda: small_chains().to_arviz()),
    ],
)
def test_missing_extra_says_which_to_install(monkeypatch, module, extra, use):
    for name in [m for m in sys.modules if m.startswith(module + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.delitem(sys.modules, "ebm.sklearn", raising=False)
    with pytest.raises(ImportError, match=rf'pip install "ebm\[{extra}\]"'):
        use()
