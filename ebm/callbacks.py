"""Training callbacks for ``ebm.fit``/``ebm.Trainer`` that need optional packages.

``TensorBoard`` writes TensorBoard event files through ``torch.utils.tensorboard``, which
needs the ``tensorboard`` package (``pip install "ebm[tensorboard]"``). ``ebm.Centering``
stays in ``ebm.training.centering`` (no extra needed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["TensorBoard"]


def _summary_writer(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ImportError(
            'ebm.callbacks.TensorBoard needs the tensorboard package: pip install "ebm[tensorboard]" '
            "(or pip install tensorboard)"
        ) from err
    return SummaryWriter(log_dir=str(log_dir))


def _image_shape(shape: tuple[int, ...], given: tuple[int, int] | None) -> tuple[int, int] | None:
    """``(height, width)`` to show one row of a block of ``shape`` as an image, or ``None``."""
    size = math.prod(shape)
    if given is not None:
        return tuple(given) if given[0] * given[1] == size else None
    if len(shape) == 2:
        return shape
    side = math.isqrt(size)
    return (side, side) if side > 1 and side * side == size else None


def _to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Scale each image of ``(n, 1, H, W)`` to [0, 1] (filters have arbitrary signs and scales)."""
    flat = x.reshape(len(x), -1)
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return ((flat - low) / (high - low).clamp_min(1e-12)).reshape(x.shape)


class TensorBoard:
    """Logs training to TensorBoard: every history metric each epoch and, every ``every``
    epochs (and after the first), model samples, filters and parameter histograms.

    Tags (``tensorboard --logdir LOG_DIR`` shows them):

    - ``metrics/<name>``: each entry of the epoch's history (``loss``, ``time``,
      ``log_likelihood``, ``val_pseudo_ll``, ...), and ``metrics/lr``, per epoch;
    - ``parameters/<name>``: a histogram of each model parameter;
    - ``samples/<block>``: the model-phase states of the last batch (the persistent chains
      under PCD: samples of the model) as images when a row reshapes to an image (a 2-D
      block, a square number of sites, or ``image_shape``), else a histogram;
    - ``filters``: for models with a weight matrix ``W`` ``(n_visible, n_hidden)`` whose
      visible rows reshape to an image (``ebm.RBM``, ``ebm.GaussianRBM``), each hidden unit's
      weights as an image, scaled to [0, 1] per filter.

    Args:
        log_dir: folder of the event files (created if missing).
        every: log samples, filters and histograms every this many epochs.
        n_images: at most this many samples and filters per image grid.
        image_shape: ``(height, width)`` of one visible row, when it is not square.

    Use ``ebm.fit(model, data, callbacks=[ebm.callbacks.TensorBoard("runs/rbm")])``, or
    ``ebm train --tensorboard DIR``.
    """

    def __init__(
        self,
        log_dir: str | Path,
        every: int = 5,
        n_images: int = 64,
        image_shape: tuple[int, int] | None = None,
    ):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        if not isinstance(n_images, int) or n_images < 1:
            raise ValueError(f"n_images must be a positive integer, got {n_images!r}")
        self.log_dir = Path(log_dir)
        self.every, self.n_images, self.image_shape = every, n_images, image_shape
        self.writer = _summary_writer(self.log_dir)  # fails now, not after the first epoch
        self._negatives: Mapping[str, torch.Tensor] | None = None

    def on_train_begin(self, trainer) -> None:
        self._negatives = None

    def on_batch_end(self, trainer, batch, negatives) -> None:
        self._negatives = negatives  # a reference only: read once per logged epoch

    def on_epoch_end(self, trainer, epoch: int, metrics: Mapping[str, Any]) -> None:
        writer = self.writer
        for name, value in metrics.items():
            if name != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(f"metrics/{name}", value, epoch)
        writer.add_scalar("metrics/lr", trainer.optimizer.param_groups[0]["lr"], epoch)
        if epoch == 1 or epoch % self.every == 0:
            self._log_model(trainer, epoch)
        writer.flush()

    def _log_model(self, trainer, epoch: int) -> None:
        model, writer = trainer.model, self.writer
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                writer.add_histogram(f"parameters/{name}", parameter.detach().cpu(), epoch)
            for name, x in (self._negatives or {}).items():
                shape = _image_shape(tuple(x.shape[1:]), self.image_shape)
                x = x.detach()[: self.n_images].float().cpu()
                if shape is None:
                    writer.add_histogram(f"samples/{name}", x, epoch)
                else:
                    writer.add_images(f"samples/{name}", _to_unit_range(x.reshape(-1, 1, *shape)), epoch)
            weights = getattr(model, "W", None)
            shape = None if not isinstance(weights, torch.Tensor) or weights.dim() != 2 else self._visible_image(model)
            if shape is not None:
                filters = weights.detach().T[: self.n_images].float().cpu().reshape(-1, 1, *shape)
                writer.add_images("filters", _to_unit_range(filters), epoch)

    def _visible_image(self, model) -> tuple[int, int] | None:
        domain = model.variables.get("v")
        return None if domain is None else _image_shape(domain.shape, self.image_shape)

    def close(self) -> None:
        """Flush and close the event file (also done when the callback is garbage-collected)."""
        self.writer.close()

    def __del__(self):
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.close()
