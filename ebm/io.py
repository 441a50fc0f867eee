"""Saving and loading models and training checkpoints with atomic writes."""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path

import torch


def atomic_save(obj, path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``.

    A crash mid-write leaves the previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def model_record(model) -> dict:
    """The model as plain data: class path, constructor config and state dict."""
    cls = type(model)
    return {
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "config": dict(getattr(model, "config", {})),
        "dtype": str(model.dtype).removeprefix("torch."),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def model_from_record(record: dict, map_location=None):
    """Rebuild a model from ``model_record`` output."""
    module_name, _, qualname = record["class"].partition(":")
    obj = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    model = obj(**record["config"])
    # the constructor builds parameters in the default dtype; restore the saved one first
    dtype = getattr(torch, record.get("dtype", ""), None)
    if isinstance(dtype, torch.dtype):
        model.to(dtype)
    model.load_state_dict(record["state_dict"])
    if map_location is not None:
        model.to(map_location)
    return model


def save_model(model, path) -> None:
    """Save ``model`` (constructor config + state dict) to ``path`` atomically."""
    atomic_save({"ebm_model": model_record(model)}, path)


def load(path, map_location=None):
    """Load a model saved with ``model.save(path)``; reads with ``weights_only=True``.

    Args:
        path: the file written by ``save``.
        map_location: optional device to move the model to.
    """
    record = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(record, dict) or "ebm_model" not in record:
        raise ValueError(f"{path} is not a model saved by ebm (no 'ebm_model' record)")
    return model_from_record(record["ebm_model"], map_location)
