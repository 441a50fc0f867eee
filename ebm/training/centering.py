"""Centering (Melchior, Fischer & Wiskott 2016) as a training callback.

Use with ``ebm.models.CenteredRBM``::

    rbm = ebm.CenteredRBM(784, 500)
    ebm.fit(rbm, {"v": X}, callbacks=[ebm.Centering(rate=0.01)])

After each optimizer step the offsets move towards the batch's mean activities by an
exponential moving average, ``μ ← (1 − ν)μ + ν·mean(v_data)`` and ``λ ← (1 − ν)λ +
ν·mean(p(h = 1 | v_data))`` (the "dd" variant: both offsets from the data phase), and the
model's ``recenter`` shifts the biases so that the distribution is unchanged. ``ν`` (the
paper's sliding-average rate, 0.01 there) is ``rate``.
"""

from __future__ import annotations

import torch


class Centering:
    """Callback that keeps a ``CenteredRBM``'s offsets at the data's mean activities.

    Args:
        rate: the moving-average rate ``ν`` in ``(0, 1]`` of the offsets (1: the last batch).
        visible: update ``μ``.
        hidden: update ``λ``.
    """

    def __init__(self, rate: float = 0.01, visible: bool = True, hidden: bool = True):
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"rate must be in (0, 1], got {rate!r}")
        self.rate, self.visible, self.hidden = float(rate), bool(visible), bool(hidden)

    def on_train_begin(self, trainer) -> None:
        model = trainer.model
        if not callable(getattr(model, "recenter", None)):
            raise TypeError(
                f"Centering needs a model with offsets and recenter(), e.g. ebm.CenteredRBM; got {type(model).__name__}"
            )

    def on_batch_end(self, trainer, batch: dict, negatives: dict) -> None:
        model = trainer.model
        with torch.no_grad():
            v = batch["v"]
            mu = torch.lerp(model.mu, v.mean(0), self.rate) if self.visible else None
            lam = None
            if self.hidden:
                lam = torch.lerp(model.lam, torch.sigmoid(model.hidden_logits(v)).mean(0), self.rate)
            model.recenter(mu=mu, lam=lam)
