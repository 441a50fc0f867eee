"""Ready-made energy models."""

from ebm.models.centered import CenteredRBM
from ebm.models.independent import Independent
from ebm.models.rbm import RBM
from ebm.models.tempered import Tempered

__all__ = ["RBM", "CenteredRBM", "Independent", "Tempered"]
