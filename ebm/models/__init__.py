"""Ready-made energy models."""

from ebm.models.rbm import RBM

__all__ = ["RBM"]
