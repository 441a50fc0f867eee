"""Devices a model, a run or a file can be put on here, and one clear error for the others."""

from __future__ import annotations

import torch


def available_devices() -> list[str]:
    """The devices torch can use on this machine: ``"cpu"``, then ``"cuda:0"``, ... and
    ``"mps"`` where present."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    return names


def check_device(device: str | torch.device, what: str | None = None) -> torch.device:
    """``torch.device(device)``, checked to exist here; ``what`` names the argument in errors.

    Raises:
        ValueError: one line naming ``device`` and the devices available (instead of torch's
            ``AssertionError: Torch not compiled with CUDA enabled`` later on).
    """
    available = available_devices()
    where = f"{what}: " if what else ""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{where}unknown device {device!r}; available here: {', '.join(available)}") from None
    if resolved.type == "cuda":
        present = torch.cuda.is_available() and (resolved.index is None or resolved.index < torch.cuda.device_count())
    elif resolved.type == "mps":
        present = torch.backends.mps.is_available()
    else:
        return resolved  # cpu, and the kinds ebm makes no claim about (meta, xpu, ...)
    if not present:
        why = "this torch has no CUDA" if resolved.type == "cuda" and not torch.cuda.is_available() else "not present"
        raise ValueError(f"{where}device {str(device)!r} is not available ({why}); available here: {', '.join(available)}")
    return resolved
