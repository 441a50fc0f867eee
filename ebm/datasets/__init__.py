"""Datasets: 8x8 digits (bundled), MNIST (IDX files), bars-and-stripes, 2-D toy densities.

Every loader returns ``torch`` tensors in ``torch.get_default_dtype()`` unless told otherwise.
"""

from ebm.datasets.images import bars_and_stripes, digits
from ebm.datasets.mnist import mnist
from ebm.datasets.toy2d import TOY2D, Toy2D, toy2d

__all__ = ["TOY2D", "Toy2D", "bars_and_stripes", "digits", "mnist", "toy2d"]
