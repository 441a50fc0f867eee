"""Datasets: 8x8 digits (bundled), MNIST (IDX files), bars-and-stripes.

Every loader returns ``torch`` tensors in ``torch.get_default_dtype()`` unless told otherwise.
"""

from ebm.datasets.images import bars_and_stripes, digits
from ebm.datasets.mnist import mnist

__all__ = ["bars_and_stripes", "digits", "mnist"]
