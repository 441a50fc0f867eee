"""Training by the awake-minus-asleep gradient (eq. 4) through the surrogate of eq. 16."""

from ebm.training.negatives import ContrastiveDivergence, NegativePhase, PersistentChains, ReplayBuffer
from ebm.training.objective import data_phase, surrogate
from ebm.training.trainer import History, Trainer, TrainingDiverged, TrainingInterrupted, fit

__all__ = [
    "ContrastiveDivergence",
    "History",
    "NegativePhase",
    "PersistentChains",
    "ReplayBuffer",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "data_phase",
    "fit",
    "surrogate",
]
