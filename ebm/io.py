"""Saving and loading models and training checkpoints: atomic writes, SHA-256 checksums,
reading with ``weights_only=True`` (``ebm.serialization``)."""

from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path

import torch

from ebm.devices import check_device
from ebm.serialization import importable_class, read_record, seal, verify


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


def remove_stale_temporaries(path) -> list[Path]:
    """Delete ``path.*.tmp`` files that an ``atomic_save`` killed mid-write left beside
    ``path``; returns the deleted paths."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = sorted(path.parent.glob(f"{glob.escape(path.name)}.*.tmp"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def model_record(model) -> dict:
    """The model as plain data: class path, constructor config and state dict."""
    cls = type(model)
    return {
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "config": dict(getattr(model, "config", {})),
        "dtype": str(model.dtype).removeprefix("torch."),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def model_from_record(record: dict, map_location=None, path="the model record"):
    """Rebuild a model from ``model_record`` output. The class it names must be an importable
    ``EnergyModel`` subclass; nothing else is called."""
    from ebm.model import EnergyModel

    if not isinstance(record, dict) or not {"class", "config", "state_dict"} <= record.keys():
        raise ValueError(f"{path} has no complete model record (class, config, state_dict)")
    if not isinstance(record["config"], dict) or not all(isinstance(k, str) for k in record["config"]):
        raise ValueError(f"{path} has a model configuration that is not a dict of argument names")
    cls = importable_class(record["class"], EnergyModel, str(path))
    model = cls(**record["config"])
    # the constructor builds parameters in the default dtype; restore the saved one first
    dtype = getattr(torch, record.get("dtype", ""), None)
    if isinstance(dtype, torch.dtype):
        model.to(dtype)
    model.load_state_dict(record["state_dict"])
    if map_location is not None:
        model.to(map_location)
    return model


def save_model(model, path) -> None:
    """Save ``model`` (constructor config + state dict, with a SHA-256 checksum) to ``path``
    atomically."""
    atomic_save(seal({"ebm_model": model_record(model)}), path)


def load(path, map_location=None):
    """Load a model saved with ``model.save(path)``; reads with ``weights_only=True``.

    The file's checksum is verified (files written before checksums were stored load
    without this check). The model's class must be importable here (not defined in a
    script's ``__main__``) and a subclass of ``ebm.EnergyModel``; only its constructor is
    called, with the recorded configuration.

    Args:
        path: the file written by ``save``.
        map_location: optional device to move the model to.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: one line naming ``path``: empty, truncated, corrupted (checksum),
            unsafe, not an ebm model (a training checkpoint or a chains file is named as
            such, with what to call instead), or a class that cannot be imported; or
            ``map_location`` is a device that does not exist here.
    """
    if map_location is not None:
        map_location = check_device(map_location, "map_location")
    record = read_record(path, "model file saved by ebm")
    if "ebm_checkpoint" in record:
        raise ValueError(
            f"{path} is a training checkpoint, not a model file: continue training with ebm.fit(..., resume={str(path)!r}) "
            f"(ebm train --resume), or load the model that training saved (model.pt in an ebm train run)"
        )
    if "ebm_chains" in record:
        raise ValueError(f"{path} holds chains written by ebm sample, not a model: load the model file (model.pt)")
    if "ebm_model" not in record:
        raise ValueError(f"{path} is not a model saved by ebm (no 'ebm_model' record)")
    verify(record, path)
    return model_from_record(record["ebm_model"], map_location, path)
