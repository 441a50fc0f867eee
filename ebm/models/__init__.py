"""Ready-made energy models."""

from ebm.models.centered import CenteredRBM
from ebm.models.gaussian_rbm import GaussianRBM
from ebm.models.independent import Independent
from ebm.models.linear_gaussian import LinearGaussian
from ebm.models.mlp import MLPEnergy
from ebm.models.rbm import RBM
from ebm.models.tempered import Tempered

__all__ = ["RBM", "CenteredRBM", "GaussianRBM", "Independent", "LinearGaussian", "MLPEnergy", "Tempered"]
