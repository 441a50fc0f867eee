"""ebm: energy-based models trained with MCMC, in PyTorch."""

from ebm import callbacks as callbacks  # ebm.callbacks.TensorBoard (documented under Training)
from ebm import diagnostics, plot
from ebm.chains import Chains, sample
from ebm.evaluation.bounds import log_likelihood_bounds
from ebm.evaluation.metrics import log_likelihood
from ebm.evaluation.partition import log_partition
from ebm.io import load
from ebm.model import EnergyModel
from ebm.models.centered import CenteredRBM
from ebm.models.gaussian_rbm import GaussianRBM
from ebm.models.linear_gaussian import LinearGaussian
from ebm.models.mlp import MLPEnergy
from ebm.models.rbm import RBM
from ebm.samplers.composite import Composite
from ebm.samplers.gibbs import Gibbs
from ebm.samplers.hmc import HMC
from ebm.samplers.langevin import Langevin
from ebm.samplers.nuts import NUTS
from ebm.samplers.tempering import ParallelTempering
from ebm.training.centering import Centering
from ebm.training.trainer import Trainer, fit
from ebm.variables import Binary, Categorical, Real, Spin

__version__ = "0.1.0"

__all__ = [
    "HMC",
    "NUTS",
    "RBM",
    "Binary",
    "Categorical",
    "CenteredRBM",
    "Centering",
    "Chains",
    "Composite",
    "EnergyModel",
    "GaussianRBM",
    "Gibbs",
    "Langevin",
    "LinearGaussian",
    "MLPEnergy",
    "ParallelTempering",
    "Real",
    "Spin",
    "Trainer",
    "diagnostics",
    "fit",
    "load",
    "log_likelihood",
    "log_likelihood_bounds",
    "log_partition",
    "plot",
    "sample",
]


def __getattr__(name: str):
    # ebm.sklearn needs scikit-learn, an optional extra: import it on first use, not with ebm
    if name == "sklearn":
        import importlib

        return importlib.import_module("ebm.sklearn")
    raise AttributeError(f"module 'ebm' has no attribute {name!r}")
