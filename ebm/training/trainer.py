"""``Trainer`` and ``ebm.fit``: the generic awake-minus-asleep training loop (eq. 4).

Each batch: the data phase (``objective.data_phase``), the model phase (a ``NegativePhase``:
CD-k, PCD-k, replay buffer), the surrogate of eq. 16 (``objective.surrogate``), one step of a
``torch.optim`` optimizer. Once per epoch: the learning-rate schedule, a divergence check,
metrics (on a fixed subsample of rows, and only as often as keeps them under a fifth of the
run), callbacks, a checkpoint. A checkpoint is also written mid-epoch every
``checkpoint_seconds`` (or ``checkpoint_batches``) and when SIGTERM or SIGINT arrives; resuming
from any of them continues exactly as the uninterrupted run would.

Callbacks are any objects with some of these methods (others rely on these names):

- ``on_train_begin(trainer)``
- ``on_batch_end(trainer, batch, negatives)``: after the optimizer step; ``batch`` is the
  data-phase state dict, ``negatives`` the model-phase state dict.
- ``on_epoch_end(trainer, epoch, metrics)``: ``epoch`` counts from 1; ``metrics`` is the
  epoch's history entry, and a callback may add entries to it (they are checkpointed).
  Setting ``trainer.stop_training = True`` ends training after this epoch.

The trainer exposes ``.model``, ``.optimizer``, ``.scheduler``, ``.sampler``,
``.negatives``, ``.generator``, ``.epoch`` (completed epochs) and ``.history``.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ebm import distributed
from ebm.evaluation.enumeration import n_bits
from ebm.evaluation.metrics import log_likelihood
from ebm.evaluation.partition import exact_plan, log_partition
from ebm.evaluation.pseudo import pseudo_log_likelihood, reconstruction_error
from ebm.io import atomic_save, model_record, remove_stale_temporaries
from ebm.model import EnergyModel
from ebm.samplers.base import Sampler
from ebm.samplers.gibbs import Gibbs
from ebm.serialization import from_plain, read_record, seal, to_plain, verify
from ebm.training import rbm_step
from ebm.training.centering import CenteredUpdate, supports_centered_update
from ebm.training.fused_adam import fused_adam_step
from ebm.training.negatives import NegativePhase, negative_phase
from ebm.training.objective import data_phase, phase_energy, surrogate, uses_free_energy
from ebm.training.rbm_step import supports_fast_gradient

#: ``lr=None``: the learning rate of every model but a centred ``RBM`` ...
DEFAULT_LR = 0.01
#: ... and of the centred update of an ``RBM``: ``min(CENTERED_MAX_LR, CENTERED_STEP_NORM /
#: sqrt(n_visible * n_hidden))``, Adam moving ``W`` by about this Frobenius norm per step
#: (each weight by about lr): 0.03 for 64x16 (the digits), 0.0086 for 784x16, 0.0015 for 784x500
CENTERED_STEP_NORM = 0.96
CENTERED_MAX_LR = 0.03
#: ``epochs=None``: at least this many epochs ...
DEFAULT_EPOCHS = 20
#: ... and at least this many optimizer steps (small data sets get more epochs)
DEFAULT_MIN_STEPS = 20_000
#: ``metrics="auto"`` computes the exact log-likelihood when log Z enumerates at most this many states
AUTO_EXACT_STATES = 2**20
#: ``metrics="auto"`` evaluates the pseudo-likelihood on at most this many rows ...
AUTO_PL_ROWS = 2000
#: ... and over every site when there are at most this many, else this many random sites per row
AUTO_PL_SITES = 64
METRICS = ("recon", "pseudo_ll", "log_likelihood")
#: ``evaluate_rows="auto"``: metrics are computed on at most this many rows of each set (a
#: fixed random subsample, the same every epoch)
AUTO_EVAL_ROWS = 10_000
#: ``evaluate_every="auto"`` evaluates every k epochs, with k the smallest that keeps the
#: measured evaluation time under this fraction of the run
AUTO_EVAL_FRACTION = 0.2
#: ... unless one evaluation takes less than this many seconds: then every epoch is evaluated
AUTO_EVAL_SECONDS = 1.0
#: default ``checkpoint_seconds``: at most about this much work is lost to a kill
CHECKPOINT_SECONDS = 60.0
#: training has run away when a parameter's magnitude exceeds this many times its scale at the
#: start (the largest of 1, the initial parameters' and the data's magnitudes)
RUNAWAY_FACTOR = 1e4
SMALL_PARAMETER = 4096  # elements: below, the runaway check's norm is dispatch-bound
#: format of the checkpoint files (1: pickled sampler states, no longer read)
CHECKPOINT_FORMAT = 2
#: how ``_nan_source`` ends when the parameters are finite and the energy itself is not
ENERGY_AT_FINITE_PARAMETERS = ", with finite parameters"


class TrainingDiverged(FloatingPointError):
    """Energies or parameters became NaN or infinite, or the parameters ran away (grew
    ``RUNAWAY_FACTOR`` times past their scale at the start), during training."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT arrived during ``fit`` with a ``checkpoint`` set: the batch in
    progress was finished, the checkpoint written and training stopped. ``signal`` is the
    signal's number; resume with ``fit(..., resume=checkpoint)``. (Without a checkpoint the
    signals keep their usual effect.)"""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signal = signum


class History(list):
    """Per-epoch metrics: a list of dicts (one per epoch, with an ``"epoch"`` key counting
    from 1). ``history["name"]`` is the list of that metric's values over the epochs."""

    def __getitem__(self, key):
        if isinstance(key, str):
            if not any(key in entry for entry in self):
                raise KeyError(f"no metric {key!r} in the history; metrics: {sorted({k for e in self for k in e})}")
            return [entry.get(key) for entry in self]
        return super().__getitem__(key)


def _make_optimizer(optimizer, params: list[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if isinstance(optimizer, torch.optim.Optimizer):
        if weight_decay:
            raise ValueError("give weight_decay to your optimizer instance, not to fit/Trainer")
        return optimizer
    if optimizer is None:
        optimizer = "adam"
    if isinstance(optimizer, str):
        names = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
        if optimizer.lower() not in names:
            raise ValueError(f"unknown optimizer {optimizer!r}; use one of {sorted(names)}, a torch.optim class or instance")
        optimizer = names[optimizer.lower()]
    if not callable(optimizer):
        raise TypeError(f"optimizer must be None, a name, a torch.optim class or an instance, got {optimizer!r}")
    if optimizer is torch.optim.SGD:
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if optimizer in (torch.optim.Adam, torch.optim.AdamW) and all(p.device.type in ("cpu", "cuda") for p in params):
        # one fused kernel per parameter instead of ~10 ops each (~2x faster per step on an RBM)
        return optimizer(params, lr=lr, weight_decay=weight_decay, fused=True)
    return optimizer(params, lr=lr, weight_decay=weight_decay)


def _make_scheduler(schedule, optimizer: torch.optim.Optimizer, epochs: int):
    if schedule is None or schedule == "constant":
        return None
    if schedule == "linear":
        # decays to lr / epochs in the last epoch
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0 - e / max(epochs, 1))
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    if callable(schedule):
        return schedule(optimizer, epochs)
    raise ValueError(
        f"schedule must be 'constant', 'linear', 'cosine', None or a callable (optimizer, epochs), got {schedule!r}"
    )


def _hooks(callbacks: Iterable, name: str) -> list[Callable]:
    return [getattr(cb, name) for cb in callbacks if callable(getattr(cb, name, None))]


class Trainer:
    """Trains any ``EnergyModel`` by the awake-minus-asleep gradient of eq. 4.

    Args:
        model: the model; its parameters are trained in place.
        sampler: the MCMC kernel of both phases (default ``ebm.Gibbs()``).
        method: ``"pcd"`` (persistent chains), ``"cd"`` (chains restart at the batch),
            ``"replay"`` (replay buffer), or a ``NegativePhase`` instance.
        k: sampler steps per batch in the model phase (and, when the data phase must sample
            latent blocks, there too unless ``k_data`` is given).
        n_chains: number of persistent/replay chains (CD uses one chain per batch row).
        batch_size: data rows per optimizer step; the last batch of an epoch holds what is
            left. Larger than the data, every epoch is one step on all rows (this warns).

    Under a process group of several ranks (initialised before the ``Trainer`` is made;
    ``ebm.distributed``, docs page "Scaling out"), ``n_chains`` and ``batch_size`` are global:
    each rank keeps its share of the chains and takes every ``world``-th row of each batch of
    one order shared by the ranks; rank 0's parameters are broadcast at the start, gradients
    averaged in one all-reduce per step, losses averaged, and rank 0 alone writes the
    checkpoint (with every rank's chains and random stream) and shows the progress bar;
    ``resume=`` gives each rank back its own (same number of ranks, the file readable by
    all). A dead rank stops the others with ``ebm.distributed.RankFailure``. SIGTERM or SIGINT
    on any rank stops every rank after the same step, with a last checkpoint.
        optimizer: ``None`` (the default, Adam), ``"adam"``, ``"adamw"``, ``"sgd"`` (momentum
            0.9), a ``torch.optim`` class (called as ``cls(params, lr=lr,
            weight_decay=weight_decay)``) or an optimizer instance over the model's parameters.
        lr: learning rate; ``None`` (the default): ``DEFAULT_LR`` (0.01), or for the centred
            update of an ``RBM`` ``min(0.03, 0.96 / sqrt(n_visible * n_hidden))`` (0.03 at
            64x16, 0.0015 at 784x500: larger models take smaller Adam steps per weight).
        centering: ``"auto"`` (the default): take each optimizer step of a plain ``ebm.RBM``
            in centred coordinates (``ebm.training.centering.CenteredUpdate``: offsets the
            data's visible means and ½; the model stays a plain RBM, only the update
            direction changes) unless ``optimizer`` is an instance (a hand-built optimizer
            is followed as given); ``True``: always (a plain ``RBM`` only); ``False``: never.
            It lets Adam take larger steps: on the digits (64x16) the defaults end at -17.18
            nats (median of 10 seeds) against -18.2 before; see ``benchmarks/RESULTS.md``.
        schedule: per-epoch learning-rate schedule: ``"linear"`` (the default: decays
            linearly to ``lr / epochs`` in the last epoch), ``"cosine"``, ``"constant"``
            or a callable ``(optimizer, epochs) -> torch.optim.lr_scheduler``.
        weight_decay: passed to the optimizer (with the centred update it acts in the centred
            coordinates: it pulls ``W``, ``a + Wλ`` and ``b + Wᵀμ`` towards 0).
        energy_l2: coefficient of an L2 penalty on the energies of both phases (keeps
            continuous EBMs from drifting; Du & Mordatch 2019); 0 disables it.
        clip_grad: clip the gradient norm to this value (``None``: no clipping).
        free_energy_negatives: when the model's ``free_energy`` sums out the latent blocks,
            use it for the model phase too (Rao-Blackwellised negatives).
        k_data: sampler steps for the data-phase latents of models without ``free_energy``.
        init_bias: before training (not when resuming, nor in a later ``fit`` of the same
            trainer), call ``model.init_visible_bias(data["v"])``
            when the model has it (``RBM``: visible biases = data log-odds). Pass ``False``
            to keep the biases of an already trained model.
        metrics: ``"auto"`` (every cheap monitor the model supports), ``None`` (only loss and
            time) or a list from ``"recon"`` (reconstruction error), ``"pseudo_ll"``
            (pseudo-log-likelihood), ``"log_likelihood"`` (exact, by enumeration). Means per
            row in nats (``recon``: squared error per row).
        evaluate_rows: the metrics are means over at most this many rows of each set, a fixed
            random subsample drawn from ``seed`` (the same rows every epoch); ``"auto"``:
            ``AUTO_EVAL_ROWS``; ``None``: every row.
        evaluate_every: compute the metrics every this many epochs (and after the last);
            ``"auto"`` measures the evaluation and training times and evaluates as often as
            keeps evaluation under ``AUTO_EVAL_FRACTION`` of the run, or every epoch when one
            evaluation takes under ``AUTO_EVAL_SECONDS`` (epochs in between
            have only ``loss`` and ``time``). ``trainer.evaluation`` says what was chosen;
            the progress bar shows it.
        callbacks: objects with ``on_train_begin``/``on_batch_end``/``on_epoch_end`` (module doc).
        progress: show a tqdm bar (default: when stderr is a terminal).
        checkpoint: path of the checkpoint file (``None``: no checkpoints); written as plain
            data with a checksum and read back with ``weights_only=True`` (``ebm.serialization``).
        checkpoint_every: write the checkpoint every this many epochs (and after the last).
        checkpoint_seconds: also write it mid-epoch once this many seconds of training have
            passed since the last one (default 60: a kill loses at most about a minute);
            ``None``: only at epoch ends.
        checkpoint_batches: also write it mid-epoch every this many batches (``None``: off).
            Whenever a checkpoint is set, SIGTERM and SIGINT finish the batch in progress,
            write the checkpoint and raise ``TrainingInterrupted`` (a second signal acts
            at once, as usual).
        runaway_factor: stop with ``TrainingDiverged`` when a parameter's magnitude exceeds
            this many times its scale at the start of training (the largest of 1, the initial
            parameters' and the data's magnitudes); ``None`` disables the check (for models
            whose parameters legitimately grow that much, e.g. precisions of tiny variances).
        seed: seed of every random draw of training (shuffling, chains).
    """

    def __init__(
        self,
        model: EnergyModel,
        sampler: Sampler | None = None,
        method: str | NegativePhase = "pcd",
        k: int = 1,
        n_chains: int = 100,
        batch_size: int = 10,
        optimizer=None,
        lr: float | None = None,
        seed: int = 0,
        *,
        centering: bool | str = "auto",
        schedule="linear",
        weight_decay: float = 0.0,
        energy_l2: float = 0.0,
        clip_grad: float | None = None,
        free_energy_negatives: bool = True,
        k_data: int | None = None,
        init_bias: bool = True,
        metrics="auto",
        callbacks: Iterable = (),
        progress: bool | None = None,
        checkpoint: str | Path | None = None,
        checkpoint_every: int = 1,
        checkpoint_seconds: float | None = CHECKPOINT_SECONDS,
        checkpoint_batches: int | None = None,
        evaluate_rows: int | str | None = "auto",
        evaluate_every: int | str = "auto",
        runaway_factor: float | None = RUNAWAY_FACTOR,
    ):
        if not isinstance(model, EnergyModel):
            raise TypeError(f"model must be an ebm.EnergyModel, got {type(model).__name__}")
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"{type(model).__name__} has no trainable parameters")
        for label, value in (("batch_size", batch_size), ("checkpoint_every", checkpoint_every)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        for label, value in (("checkpoint_batches", checkpoint_batches), ("evaluate_rows", evaluate_rows)):
            if value not in (None, "auto") and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{label} must be a positive integer or None, got {value!r}")
        if evaluate_every != "auto" and (not isinstance(evaluate_every, int) or evaluate_every < 1):
            raise ValueError(f"evaluate_every must be a positive integer or 'auto', got {evaluate_every!r}")
        if checkpoint_seconds is not None and not checkpoint_seconds > 0:
            raise ValueError(f"checkpoint_seconds must be a positive number of seconds or None, got {checkpoint_seconds!r}")
        if centering not in ("auto", True, False):
            raise ValueError(f"centering must be 'auto', True or False, got {centering!r}")
        if centering is True and not supports_centered_update(model):
            raise ValueError(
                f"centering=True needs a plain ebm.RBM training W, a and b, got {type(model).__name__}; "
                f"use ebm.CenteredRBM with the ebm.Centering callback for other RBMs"
            )
        if centering == "auto":
            centering = supports_centered_update(model) and not isinstance(optimizer, torch.optim.Optimizer)
        self.centering = centering
        if lr is None:
            lr = DEFAULT_LR
            if centering:
                lr = min(CENTERED_MAX_LR, CENTERED_STEP_NORM / math.sqrt(model.n_visible * model.n_hidden))
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr!r}")
        if runaway_factor is not None and not runaway_factor > 1:
            raise ValueError(f"runaway_factor must be a number > 1 or None, got {runaway_factor!r}")
        if isinstance(sampler, type):
            raise TypeError(f"sampler must be a sampler instance, e.g. ebm.{sampler.__name__}(), not the class itself")
        self.model = model
        self.sampler = sampler if sampler is not None else Gibbs()
        # under a process group n_chains is the global number: each rank keeps its share
        self._rank, self._world = distributed.world()
        local_chains = distributed.local_count(n_chains) if isinstance(n_chains, int) else n_chains
        if method in ("pcd", "replay") and isinstance(n_chains, int) and 0 < n_chains < self._world:
            raise ValueError(f"n_chains={n_chains} is fewer than the {self._world} ranks: use at least one chain per rank")
        self.negatives = negative_phase(method, k, local_chains)
        self._trained = params  # whose gradients are averaged over the ranks
        self.k_data = k if k_data is None else k_data
        self.batch_size = batch_size
        self.optimizer = _make_optimizer(optimizer, params, lr, weight_decay)
        self._params = [p for p in params if p.numel()]  # what the runaway check measures
        self._base_lrs = [group.get("initial_lr", group["lr"]) for group in self.optimizer.param_groups]
        self.schedule = schedule
        self.scheduler = None
        self.energy_l2, self.clip_grad = energy_l2, clip_grad
        self.free_energy_negatives, self.init_bias = free_energy_negatives, init_bias
        self.metrics = metrics
        self.callbacks = list(callbacks)
        self.progress = (sys.stderr.isatty() if progress is None else progress) and self._rank == 0
        # only rank 0 writes the checkpoint
        self.checkpoint = None if checkpoint is None or self._rank != 0 else Path(checkpoint)
        self._checkpointing = checkpoint is not None  # every rank takes part in writing it
        self._checkpoint_file = None if checkpoint is None else Path(checkpoint)  # for every rank's messages
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds, self.checkpoint_batches = checkpoint_seconds, checkpoint_batches
        self.evaluate_rows = AUTO_EVAL_ROWS if evaluate_rows == "auto" else evaluate_rows
        self.evaluate_every = evaluate_every
        #: what the metrics are computed on and how often (set by ``fit``)
        self.evaluation = ""
        self.runaway_factor = runaway_factor
        self.seed = seed
        # each rank's chains have their own stream (rank 0's is the single-process one)
        self.generator = torch.Generator(device=model.device).manual_seed(distributed.shard_seed(seed, self._rank))
        self.history = History()
        self.epoch = 0
        self.batch = 0
        self.stop_training = False
        self._last_checkpoint: str | None = None  # where the last checkpoint written stands
        self._position: dict | None = None  # mid-epoch progress to checkpoint or resume from
        self._next_evaluation = 1 if evaluate_every == "auto" else evaluate_every  # the next epoch evaluated
        self._signal: int | None = None  # SIGTERM/SIGINT received during fit
        self._agreed_signal: int | None = None  # under several ranks: a signal received by any rank
        self._epochs: int | None = None  # the total of the current fit
        self._scale: float | None = None  # parameter and data magnitude at the start of training
        self._fast_gradient = False  # set by fit for RBMs
        self._centered: CenteredUpdate | None = None  # set by fit when centering is on
        self._started = False  # fit has set up the chains (or resumed): later fits continue

    @property
    def epochs(self) -> int | None:
        """The total number of epochs of the current (or last) ``fit``, with ``epochs=None``
        resolved; ``None`` before the first ``fit``."""
        return self._epochs

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Everything needed to continue exactly: parameters, optimizer, schedule, chains,
        the random stream, the history; as tensors and plain data (``ebm.serialization``)."""
        return to_plain(
            {
                "ebm_checkpoint": CHECKPOINT_FORMAT,
                "model": model_record(self.model),
                "optimizer_class": type(self.optimizer).__name__,
                "lr": self._base_lrs,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "negatives": self.negatives.state_dict(),
                "generator": self.generator.get_state(),
                "epoch": self.epoch,
                "epochs": self._epochs,
                "scale": self._scale,
                "history": [dict(e) for e in self.history],
                "position": self._position,
                "next_evaluation": self._next_evaluation,
                "batch_size": self.batch_size,
                "seed": self.seed,
                "ranks": self._rank_states(),
            },
            "the checkpoint",
        )

    def _rank_states(self) -> list[dict] | None:
        """Under a process group, every rank's chains, random stream and losses of the epoch
        so far, gathered (a collective: every rank calls it); ``None`` on one process."""
        if self._world == 1:
            return None
        own = {
            "negatives": self.negatives.state_dict(),
            "generator": self.generator.get_state(),
            "losses": None if self._position is None else self._position["losses"],
        }
        return distributed.gather_objects(own, "checkpoint gather")

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict`` (the scheduler must exist already, i.e. inside ``fit``);
        its plain data is turned back into sampler states by ``serialization.from_plain``.

        Raises ``ValueError`` when the checkpoint was written with another model class,
        batch size, optimizer, learning rate or kind of schedule: resuming continues the
        same run; change those by starting a new run from the saved model.
        """
        state = from_plain(state, "the checkpoint")
        expected = f"{type(self.model).__module__}:{type(self.model).__qualname__}"
        if state["model"]["class"] != expected:
            raise ValueError(f"the checkpoint holds a {state['model']['class']}, not a {expected}")
        if state["batch_size"] != self.batch_size:
            raise ValueError(f"the checkpoint was trained with batch_size={state['batch_size']}, not {self.batch_size}")
        optimizer = type(self.optimizer).__name__
        if state["optimizer_class"] != optimizer:
            raise ValueError(
                f"the checkpoint was trained with the {state['optimizer_class']} optimizer, not {optimizer}: "
                f"resume with the same optimizer"
            )
        if state["lr"] != self._base_lrs:
            saved, given = ", ".join(f"{x:g}" for x in state["lr"]), ", ".join(f"{x:g}" for x in self._base_lrs)
            raise ValueError(
                f"the checkpoint was trained with lr={saved}, not {given}: resume with the same lr "
                f"(to train on at another lr, start a new run from the saved model)"
            )
        if (state["scheduler"] is None) != (self.scheduler is None):
            raise ValueError("the checkpoint's learning-rate schedule does not match this trainer's")
        self.model.load_state_dict(state["model"]["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        ranks = state.get("ranks")
        if len(ranks or [None]) != self._world:
            raise ValueError(
                f"the checkpoint was written by {len(ranks or [None])} processes, not {self._world}: "
                f"resume with the same number of ranks"
            )
        own = state if ranks is None else ranks[self._rank]  # this rank's chains and random stream
        self.negatives.load_state_dict(own["negatives"])
        self.generator.set_state(own["generator"].cpu())
        self.epoch = state["epoch"]
        self.history = History(state["history"])
        self._position = state.get("position")
        if ranks is not None and self._position is not None:
            self._position["losses"] = own["losses"]
        self._next_evaluation = state.get("next_evaluation", self.epoch + 1)
        self.seed = state["seed"]
        self._scale = state["scale"]
        if self._epochs is not None and state["epochs"] is not None and state["epochs"] != self._epochs:
            self._replan_schedule()

    def _continue_schedule(self, lrs: list[float], stored: dict | None, replan: bool) -> None:
        """Carry the learning rates and the schedule's state of an earlier ``fit`` into the new
        scheduler (built for the new total), as ``load_checkpoint`` does, and re-plan it when
        the total changed."""
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        if self.scheduler is not None and stored is not None:
            self.scheduler.load_state_dict(stored)
        if replan:
            self._replan_schedule()

    def _replan_schedule(self) -> None:
        """Spread the learning-rate schedule over a new total of epochs from the current one
        (resuming with more epochs than the checkpoint's run planned): ``"linear"`` then
        continues at ``lr * (1 - done / new_total)`` instead of ending at 0."""
        scheduler = self.scheduler
        if scheduler is None:
            return
        if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
            scheduler.T_max = max(self._epochs, 1)
        scheduler.last_epoch = self.epoch
        if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            lrs = [base * f(self.epoch) for f, base in zip(scheduler.lr_lambdas, scheduler.base_lrs, strict=True)]
        elif hasattr(scheduler, "_get_closed_form_lr"):
            lrs = scheduler._get_closed_form_lr()
        else:
            return  # a schedule that does not depend on the total: it continues as stored
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        scheduler._last_lr = list(lrs)

    def save_checkpoint(self, path: str | Path | None = None) -> None:
        """Write the trainer's state with its checksum to ``path`` (default: the
        ``checkpoint`` path) atomically. Raises ``TypeError`` when the sampler's state holds
        objects that a file cannot store safely (``ebm.NUTS``'s Pyro kernels). Under a
        process group every rank must call it (rank 0 gathers their chains and writes)."""
        path = self.checkpoint if path is None else Path(path)
        state = self.state_dict()  # under a process group: a collective of every rank
        if path is not None:
            atomic_save(seal(state), path)
            if path == self.checkpoint:
                self._last_checkpoint = self._where()
        distributed.barrier("checkpoint write")  # no rank reads it before it is complete

    def _where(self) -> str:
        if self._position is None:
            return f"end of epoch {self.epoch}"
        return f"epoch {self.epoch + 1}, batch {self._position['batch']}"

    def load_checkpoint(self, path: str | Path) -> None:
        """Continue from a checkpoint written by ``save_checkpoint``.

        The file is read with ``weights_only=True`` (a crafted file cannot run code), its
        checksum verified and only ebm's own state classes are rebuilt from it.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint at {path}")
        state = read_record(path, "training checkpoint", map_location=self.model.device)
        if "ebm_model" in state:
            raise ValueError(
                f"{path} is a model file, not a training checkpoint: to train it further, load it with "
                f"ebm.load and call fit without resume (init_bias=False keeps its biases)"
            )
        if "ebm_checkpoint" not in state:
            raise ValueError(f"{path} is not an ebm training checkpoint")
        if state["ebm_checkpoint"] != CHECKPOINT_FORMAT:
            raise ValueError(
                f"{path} is a checkpoint of format {state['ebm_checkpoint']!r}; this version of ebm resumes only "
                f"format {CHECKPOINT_FORMAT} (older ones pickled their sampler state): start a new run"
            )
        verify(state, path)
        try:
            self.load_state_dict({k: v for k, v in state.items() if k != "sha256"})
        except ValueError as error:
            raise type(error)(f"{path}: {error}") from None

    # ------------------------------------------------------------------ metrics
    def _available_metrics(self, data: Mapping[str, torch.Tensor]) -> list[str]:
        model, one = self.model, {k: v[:1] for k, v in data.items()}
        available, cheap = [], set()
        try:
            reconstruction_error(model, one)
            available.append("recon")
            cheap.add("recon")
        except ValueError:
            pass
        if all(model.variables[k].discrete and model.variables[k].n_values == 2 for k in data):
            available.append("pseudo_ll")
            cheap.add("pseudo_ll")
        try:
            subset, _ = exact_plan(model)
            available.append("log_likelihood")
            if 2 ** n_bits(model, subset) <= AUTO_EXACT_STATES:
                cheap.add("log_likelihood")
        except ValueError:
            pass
        if self.metrics == "auto":
            return [m for m in available if m in cheap]
        if self.metrics is None:
            return []
        requested = [self.metrics] if isinstance(self.metrics, str) else list(self.metrics)
        for m in requested:
            if m not in METRICS:
                raise ValueError(f"unknown metric {m!r}; choose from {METRICS}, 'auto' or None")
            if m not in available:
                raise ValueError(f"metric {m!r} is not available for {type(model).__name__} with blocks {list(data)}")
        return requested

    def _evaluate(self, sets: dict[str, Mapping[str, torch.Tensor]], metrics: list[str]) -> dict[str, float]:
        out = {}
        if not metrics:
            return out
        model = self.model
        log_z = log_partition(model) if "log_likelihood" in metrics else None
        # the pseudo-likelihood's site draws have their own stream: evaluating never
        # changes the training stream
        generator = torch.Generator(device=model.device).manual_seed(self.seed + 7919 * self.epoch)
        for prefix, data in sets.items():
            if "recon" in metrics:
                out[prefix + "recon"] = reconstruction_error(model, data).mean().item()
            if "pseudo_ll" in metrics:
                rows = {k: v[:AUTO_PL_ROWS] for k, v in data.items()}
                out[prefix + "pseudo_ll"] = pseudo_log_likelihood(model, rows, AUTO_PL_SITES, generator).mean().item()
            if "log_likelihood" in metrics:
                out[prefix + "log_likelihood"] = log_likelihood(model, data, log_z=log_z).mean().item()
        return out

    # ------------------------------------------------------------------ training
    def _check_data(self, data, what: str) -> tuple[dict[str, torch.Tensor], int]:
        if not isinstance(data, Mapping) or not data:
            raise ValueError(f"{what} must be a non-empty dict of block name -> tensor, e.g. {{'v': X}}")
        data = self.model.as_state(data, what=what)
        n = self.model.check_state(data, blocks=[k for k in self.model.variables if k in data], what=what)
        if n < 1:
            raise ValueError(f"{what} has no rows")
        return dict(data), n

    def _diverged(self, epoch: int, batch: int, what: str = "the energies became NaN or inf") -> TrainingDiverged:
        lr = self.optimizer.param_groups[0]["lr"]
        if self._last_checkpoint is not None:
            where = f"the last good checkpoint ({self.checkpoint}, {self._last_checkpoint}) is kept"
        elif self.checkpoint is not None:
            where = f"no checkpoint had been written yet to {self.checkpoint}"
        else:
            where = "no checkpoint was requested (pass checkpoint=path)"
        if what.endswith(ENERGY_AT_FINITE_PARAMETERS):
            advice = "fix the energy for those states"  # no optimizer setting helps
        else:
            advice = f"lr={lr:g}; try a smaller lr, clip_grad, weight_decay or energy_l2"
        return TrainingDiverged(f"training diverged in epoch {epoch}, batch {batch}: {what} ({advice}); {where}")

    def _nan_source(self, data: Mapping[str, torch.Tensor], order: torch.Tensor, first: int) -> str:
        """What made the loss of batch ``first`` NaN or inf, as far as the model now shows:
        the parameters that are no longer finite, else the phase (the batch's data rows, the
        persistent chains) whose energies are not finite, with the blocks of those states."""
        model = self.model
        broken = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
        if broken:
            return f"the energies became NaN or inf, and then the parameters {broken}"
        rows = order[(first - 1) * self.batch_size : first * self.batch_size]
        phases = {f"the data rows of batch {first} (data phase)": {k: x[rows] for k, x in data.items()}}
        chains = getattr(self.negatives, "chains", None)
        if chains is not None:
            phases["the persistent chains (model phase)"] = chains
        found = []
        with torch.no_grad():
            for name, state in phases.items():
                try:
                    energy = phase_energy(model, state)
                except (NotImplementedError, RuntimeError, ValueError):
                    continue  # latents that only sampling gives: this phase cannot be rechecked
                bad = int((~torch.isfinite(energy)).sum())
                if bad:
                    blocks = ", ".join(f"'{k}'" for k in state)
                    found.append(f"{bad} of {energy.numel()} states of {name}, blocks {blocks}")
        if not found:
            return "the energies became NaN or inf"
        return f"{type(model).__name__}'s energy is NaN or inf at " + " and at ".join(found) + ENERGY_AT_FINITE_PARAMETERS

    def _start_scale(self, data: Mapping[str, torch.Tensor]) -> float:
        """The magnitude training starts from: 1, the largest parameter and the largest
        real-valued datum (the runaway check's reference)."""
        sizes = [1.0] + [float(p.detach().abs().max()) for p in self._params]
        sizes += [float(x.abs().max()) for x in data.values() if x.is_floating_point() and x.numel()]
        return max(sizes)

    def _largest_parameter(self) -> torch.Tensor:
        """The largest parameter magnitude, as a device scalar (no host sync)."""
        with torch.no_grad():
            # the infinity norm of torch's foreach/linalg norms is not vectorised on the CPU
            # (2.4 ms for a 784x500 matrix, more than the update's Gibbs sweep): large tensors
            # take amax and amin (30 us each); small ones stay one foreach call (dispatch-bound)
            small = [p for p in self._params if p.numel() < SMALL_PARAMETER]
            sizes = [torch.maximum(p.amax(), p.amin().neg()) for p in self._params if p.numel() >= SMALL_PARAMETER]
            if small:
                sizes += torch._foreach_norm(small, float("inf"))
            return torch.stack(sizes).amax()

    def _check_runaway(self, epoch: int, sizes: torch.Tensor) -> None:
        if self.runaway_factor is None:
            return
        limit = self.runaway_factor * self._scale
        over = (sizes > limit).nonzero()
        if over.numel():
            batch = int(over[0, 0])
            raise self._diverged(
                epoch,
                batch + 1,
                f"the parameters ran away to {float(sizes[batch]):.3g} in magnitude, over {self.runaway_factor:g} "
                f"times their scale at the start ({self._scale:.3g}; runaway_factor=None disables this check)",
            )

    def _first_bad(self, losses: torch.Tensor, upto: int) -> int | None:
        bad = (~losses[:upto].isfinite()).nonzero()
        return None if bad.numel() == 0 else int(bad[0, 0]) + 1

    def fit(
        self,
        data: Mapping[str, torch.Tensor],
        epochs: int | None = None,
        validation: Mapping[str, torch.Tensor] | None = None,
        resume: str | Path | None = None,
    ) -> History:
        """Train for ``epochs`` epochs (in all, counting those of a resumed checkpoint).

        A second ``fit`` of the same trainer continues the first, as a resume from the state
        it ended in would: the chains, the optimizer and the schedule carry on (re-planned
        over a new total of epochs from the current one); the visible biases are initialised
        from the data and the chains set up only by the first.

        Args:
            data: ``{name: (n, *shape)}`` observed blocks (e.g. ``{"v": X}``); blocks the
                model has but ``data`` lacks are latent.
            epochs: total number of epochs; ``None`` (the default): ``DEFAULT_EPOCHS`` (20)
                or as many as make ``DEFAULT_MIN_STEPS`` (20,000) optimizer steps, whichever
                is more (the 1,797 digits in batches of 10: 112 epochs; MNIST's 60,000
                rows: 20).
            validation: held-out data with the same blocks; its metrics get a ``val_`` prefix.
            resume: a checkpoint path: continue from it exactly as the uninterrupted run would.
                With more ``epochs`` than the checkpointed run planned, the schedule is
                re-planned over the new total from the current epoch. The lr, optimizer and
                batch size must be those of the checkpoint (``ValueError`` otherwise).

        Returns:
            The ``History`` (also ``trainer.history``).

        Raises:
            TrainingDiverged: energies or parameters became NaN/inf, or a parameter grew past
                ``runaway_factor`` times its scale at the start; names the epoch and batch.
            TrainingInterrupted: SIGTERM or SIGINT arrived (with ``checkpoint`` set); the
                checkpoint holds where training stopped.
            ValueError: ``resume`` is not a readable, intact ebm checkpoint of this run.
            TypeError: ``checkpoint`` is set and the sampler's state cannot be stored safely.
        """
        if epochs is not None and (not isinstance(epochs, int) or epochs < 0):
            raise ValueError(f"epochs must be a non-negative integer or None, got {epochs!r}")
        data, n = self._check_data(data, "data")
        n_batches = -(-n // self.batch_size)
        if epochs is None:
            epochs = max(DEFAULT_EPOCHS, -(-DEFAULT_MIN_STEPS // n_batches))
        sets = {"": data}
        if validation is not None:
            validation, _ = self._check_data(validation, "validation")
            if set(validation) != set(data):
                raise ValueError(f"validation has blocks {sorted(validation)} but data has {sorted(data)}")
            sets["val_"] = validation
        model, sampler, generator = self.model, self.sampler, self.generator
        self.stop_training = False
        metrics = self._available_metrics(data)
        sum_latents = uses_free_energy(model, data)
        fe_negatives = self.free_energy_negatives and sum_latents
        # RBMs: the eq. 8 gradient by matrix products (ebm.training.rbm_step), no autograd
        self._fast_gradient = fe_negatives and not self.energy_l2 and supports_fast_gradient(model, data)
        if self.centering and "v" not in data:
            raise ValueError("the centred update needs the visible block 'v' in data; pass centering=False")
        # the offsets come from the data, so a resumed run rebuilds the same ones
        self._centered = CenteredUpdate(model, data["v"]) if self.centering else None
        # a second fit of this trainer continues the first: as a resume from its last state
        continuing = resume is None and self._started
        previous, self._epochs = self._epochs, epochs
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        stored = None if self.scheduler is None else self.scheduler.state_dict()
        self.scheduler = _make_scheduler(self.schedule, self.optimizer, epochs)
        if continuing:
            self._continue_schedule(lrs, stored, epochs != previous)
        if self.checkpoint is not None:
            remove_stale_temporaries(self.checkpoint)
        if resume is not None:
            self.load_checkpoint(resume)
            if self.checkpoint is not None and Path(resume) == self.checkpoint:
                self._last_checkpoint = self._where()
        elif not continuing:
            if self.init_bias and "v" in data and callable(getattr(model, "init_visible_bias", None)):
                model.init_visible_bias(data["v"])
            self.negatives.setup(model, sampler, data, generator)
        self._started = True
        distributed.broadcast_parameters(model)  # every rank starts from rank 0's parameters, as DDP does
        if self._scale is None:
            self._scale = self._start_scale(data)
        if self.checkpoint is not None:
            # a sampler state that no file can hold safely fails now, not after an epoch of work
            to_plain(self.negatives.state_dict(), "the checkpoint.negatives")
        for hook in _hooks(self.callbacks, "on_train_begin"):
            hook(self)
        batch_hooks = _hooks(self.callbacks, "on_batch_end")
        epoch_hooks = _hooks(self.callbacks, "on_epoch_end")

        if self._world > 1 and min(self.batch_size, n - (n_batches - 1) * self.batch_size) < self._world:
            raise ValueError(
                f"with {self._world} ranks every batch needs at least {self._world} rows (batch_size is global and "
                f"split across ranks), but the last batch of the {n} rows holds fewer: change batch_size"
            )
        if self.batch_size > n:
            warnings.warn(
                f"batch_size={self.batch_size} is larger than the {n} rows of data: each epoch is one optimizer "
                f"step on all {n} rows; pass a batch_size below {n} for several steps per epoch",
                UserWarning,
                stacklevel=3,
            )
        position, self._position = self._position, None
        if position is not None and (position["order"].numel() != n or position["batch"] >= n_batches):
            raise ValueError(
                f"{resume or 'the interrupted fit'}: the checkpoint was written mid-epoch on data of "
                f"{position['order'].numel()} rows, not {n}: resume on the same data"
            )
        evaluation_sets = {prefix: self._evaluation_rows(rows) for prefix, rows in sets.items()}
        self.evaluation = self._describe_evaluation(metrics, sets, evaluation_sets)
        # per-batch losses stay on the device; one host sync per epoch checks them all
        losses = torch.zeros(n_batches, dtype=model.dtype, device=model.device)
        # and so do the largest parameter magnitudes after each step, for the runaway check
        sizes = torch.zeros(n_batches, dtype=model.dtype, device=model.device)
        elapsed = self.history[-1].get("time", 0.0) if self.history else 0.0
        if position is not None:
            elapsed = position["elapsed"]
        bar = tqdm(
            total=epochs * n_batches,
            initial=min(self.epoch, epochs) * n_batches + (position["batch"] if position is not None else 0),
            disable=not self.progress,
            desc="training",
            unit="batch",
        )
        if metrics:
            bar.set_postfix_str(self.evaluation, refresh=False)
        try:
            with self._catching_signals():
                while self.epoch < epochs and not self.stop_training:
                    epoch = self.epoch + 1
                    start = last_saved = time.perf_counter()
                    if position is None and self._world > 1:
                        # the same order on every rank, from the shared seed; each rank takes its rows of a batch
                        shuffle = torch.Generator(device=model.device).manual_seed(self.seed + 7_777_777 * epoch)
                        order, done = torch.randperm(n, generator=shuffle, device=model.device), 0
                    elif position is None:
                        order, done = torch.randperm(n, generator=generator, device=model.device), 0
                    else:
                        order, done = position["order"], position["batch"]
                        losses[:done], sizes[:done] = position["losses"], position["sizes"]
                        position = None
                    for b in range(done, n_batches):
                        self.batch = b + 1
                        rows = order[b * self.batch_size : (b + 1) * self.batch_size]
                        if self._world > 1:
                            rows = rows[self._rank :: self._world]
                        batch = {name: x.index_select(0, rows) for name, x in data.items()}  # 3.5x faster than x[rows] (CPU)
                        try:
                            positive, negatives, loss = self._step(batch, sum_latents, fe_negatives)
                        except (RuntimeError, ValueError) as error:
                            # a model or sampler may reject NaN before our per-epoch check sees it
                            first = self._first_bad(losses, b)
                            if first is not None:
                                raise self._diverged(epoch, first, self._nan_source(data, order, first)) from error
                            self._check_runaway(epoch, sizes[:b])
                            raise
                        losses[b] = loss
                        sizes[b] = self._largest_parameter()
                        for hook in batch_hooks:
                            hook(self, positive, negatives)
                        bar.update()
                        if b + 1 < n_batches and self._mid_epoch_checkpoint_due(b + 1, last_saved):
                            # the epoch's order and losses so far let a resumed run finish it exactly
                            self._check_batches(epoch, losses, sizes, b + 1, data, order)
                            now = time.perf_counter()
                            self._position = {
                                "batch": b + 1,
                                "order": order,
                                "losses": losses[: b + 1].clone(),
                                "sizes": sizes[: b + 1].clone(),
                                "elapsed": elapsed + now - start,
                            }
                            try:
                                self.save_checkpoint()
                            except BaseException:
                                self._position = None
                                raise
                            last_saved = now
                            if self._stop_signal() is not None:
                                # kept: a later fit of this trainer finishes the epoch as a resume would
                                raise self._interrupted()
                            self._position = None
                    losses.copy_(distributed.mean_over_ranks(losses, "loss reduction"))
                    self._check_batches(epoch, losses, sizes, n_batches, data, order)
                    if not all(torch.isfinite(p).all() for p in model.parameters()):
                        raise self._diverged(epoch, n_batches, "the parameters became NaN or inf")
                    if self.scheduler is not None:
                        self.scheduler.step()
                    trained = time.perf_counter() - start
                    elapsed += trained
                    self.epoch = epoch
                    entry = {"epoch": epoch, "loss": losses.mean().item(), "time": elapsed}
                    if metrics and (epoch >= self._next_evaluation or epoch == epochs):
                        began = time.perf_counter()
                        entry.update(self._evaluate(evaluation_sets, metrics))
                        self._plan_evaluation(epoch, time.perf_counter() - began, trained, metrics, sets, evaluation_sets)
                        bar.set_postfix_str(self._postfix(entry), refresh=False)
                    self.history.append(entry)
                    for hook in epoch_hooks:
                        hook(self, epoch, entry)
                    self.stop_training = distributed.any_rank(self.stop_training)  # all ranks stop together
                    due = epoch % self.checkpoint_every == 0 or epoch == epochs or self._signal is not None
                    if self._world > 1 and self._checkpointing:
                        due = self._agree(due)  # a signal on one rank writes on all
                    if self._checkpointing and due:
                        self.save_checkpoint()
                    if self._stop_signal() is not None:
                        raise self._interrupted()
        finally:
            bar.close()
        return self.history

    # ------------------------------------------------------------------ interruptions
    def _mid_epoch_checkpoint_due(self, done: int, last_saved: float) -> bool:
        due = self._checkpoint_due_here(done, last_saved)
        if self._world > 1 and self._checkpointing:
            return self._agree(due)  # rank 0's clock and any rank's signal decide for every rank
        return due

    def _checkpoint_due_here(self, done: int, last_saved: float) -> bool:
        if self._signal is not None:
            return self._checkpointing
        if self.checkpoint is None:
            return False
        if self.checkpoint_batches is not None and done % self.checkpoint_batches == 0:
            return True
        return self.checkpoint_seconds is not None and time.perf_counter() - last_saved >= self.checkpoint_seconds

    def _check_batches(self, epoch: int, losses, sizes, done: int, data, order) -> None:
        """Raise ``TrainingDiverged`` when one of the first ``done`` batches of the epoch
        diverged (one host sync)."""
        first = self._first_bad(losses, done)
        if first is not None:
            raise self._diverged(epoch, first, self._nan_source(data, order, first))
        self._check_runaway(epoch, sizes[:done])

    def _agree(self, due: bool) -> bool:
        """Under several ranks with a checkpoint: one all-reduce makes ``due`` and a signal
        received by any rank common to all, so that every rank writes its part of the
        checkpoint and stops at the same step. Returns the agreed ``due``."""
        due, signum = distributed.max_over_ranks([due, self._signal or 0], "checkpoint agreement")
        self._agreed_signal = signum or None
        return bool(due)

    def _stop_signal(self) -> int | None:
        """The signal that stops training after this checkpoint: the one the ranks agreed on
        (a signal arriving after the agreement waits for the next one, or every rank would
        not stop together), or on one process the one received."""
        return self._agreed_signal if self._world > 1 and self._checkpointing else self._signal

    def _catching_signals(self):
        """While training with a checkpoint, SIGTERM and SIGINT only set a flag: the loop
        then writes the checkpoint and raises ``TrainingInterrupted``. The first signal
        restores the previous handler, so a second one acts at once."""
        trainer = self

        class Catching:
            def __enter__(self):
                self.previous = {}
                trainer._signal = trainer._agreed_signal = None
                # every rank catches them (torchrun signals every rank; a user may signal one)
                if not trainer._checkpointing or threading.current_thread() is not threading.main_thread():
                    return self
                for signum in (signal.SIGTERM, signal.SIGINT):
                    self.previous[signum] = signal.signal(signum, self.handle)
                return self

            def handle(self, signum, frame):
                trainer._signal = signum
                signal.signal(signum, self.previous[signum])

            def __exit__(self, *exc):
                for signum, handler in self.previous.items():
                    signal.signal(signum, handler)
                return False

        return Catching()

    def _interrupted(self) -> TrainingInterrupted:
        signum = self._stop_signal()
        name = signal.Signals(signum).name
        where = f"a checkpoint was written to {self._checkpoint_file}"
        if self._last_checkpoint is not None:  # rank 0, which wrote it, knows where it stands
            where += f" ({self._last_checkpoint})"
        return TrainingInterrupted(
            f"training stopped by {name}: {where}; continue with resume={str(self._checkpoint_file)!r}", signum
        )

    # ------------------------------------------------------------------ evaluation schedule
    def _evaluation_rows(self, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A fixed subsample of at most ``evaluate_rows`` rows, drawn from ``seed`` on the
        CPU (the same rows on every device and every epoch)."""
        n = next(iter(data.values())).shape[0]
        if self.evaluate_rows is None or n <= self.evaluate_rows:
            return data
        picked = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))[: self.evaluate_rows]
        picked = picked.sort().values.to(self.model.device)
        return {k: v[picked] for k, v in data.items()}

    def _describe_evaluation(self, metrics, sets, evaluation_sets) -> str:
        if not metrics:
            return "no metrics"
        parts = []
        for prefix, data in sets.items():
            n, used = (next(iter(d.values())).shape[0] for d in (data, evaluation_sets[prefix]))
            name = "validation" if prefix else "training"
            parts.append(f"all {n:,} {name} rows" if used == n else f"{used:,} of {n:,} {name} rows")
        every = self.evaluate_every
        how = "every epoch" if every in ("auto", 1) else f"every {every} epochs"
        return f"metrics on {' and '.join(parts)}, {how}"

    def _plan_evaluation(self, epoch: int, spent: float, trained: float, metrics, sets, evaluation_sets) -> None:
        """Schedule the next evaluation: ``evaluate_every`` epochs on, or with ``"auto"`` the
        fewest epochs on that keep evaluation under ``AUTO_EVAL_FRACTION`` of the run, as
        measured on this epoch (spent / (k * trained + spent) <= 3/4 of it, so that the
        evaluations of the first and the last epoch fit too)."""
        if self.evaluate_every != "auto":
            self._next_evaluation = epoch + self.evaluate_every
            return
        f = 0.75 * AUTO_EVAL_FRACTION  # leaves room for the first and the last evaluation
        every = 1 if spent < AUTO_EVAL_SECONDS else max(1, math.ceil(spent * (1 - f) / (f * max(trained, 1e-9))))
        self._next_evaluation = epoch + every
        description = self._describe_evaluation(metrics, sets, evaluation_sets)
        if every > 1:
            description = description.replace(
                "every epoch", f"every {every} epochs (evaluation {spent:.1f} s, an epoch {trained:.1f} s)"
            )
        self.evaluation = description

    def _postfix(self, entry: dict) -> str:
        values = ", ".join(f"{k}={v:.4g}" for k, v in entry.items() if k not in ("epoch", "time"))
        return f"{values} ({self.evaluation})"

    def _step(self, batch, sum_latents: bool, fe_negatives: bool):
        model, sampler, generator = self.model, self.sampler, self.generator
        positive = data_phase(model, sampler, batch, self.k_data, generator, sum_latents)
        negatives = self.negatives(model, sampler, positive, generator)
        if self._fast_gradient:
            loss = rbm_step.rbm_gradient(model, positive, negatives)
        else:
            loss = surrogate(model, positive, negatives, free_energy_negatives=fe_negatives, energy_l2=self.energy_l2)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        distributed.average_gradients(self._trained)  # after either gradient path, before clipping
        centered = self._centered
        if centered is not None:
            centered.centre_gradient()  # the optimizer, clipping included, acts in centred coordinates
        if self.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.clip_grad)
        if centered is None:
            self._optimizer_step()
        else:
            centered.enter()
            try:  # an interrupt inside the step must not leave the biases in centred coordinates
                self._optimizer_step()
            finally:
                centered.leave()
        return positive, negatives, loss.detach()

    def _optimizer_step(self) -> None:
        if not fused_adam_step(self.optimizer):  # the same step, without its Python overhead
            self.optimizer.step()


def fit(
    model: EnergyModel,
    data: Mapping[str, torch.Tensor],
    sampler: Sampler | None = None,
    method: str | NegativePhase = "pcd",
    k: int = 1,
    epochs: int | None = None,
    batch_size: int = 10,
    n_chains: int = 100,
    optimizer=None,
    lr: float | None = None,
    seed: int = 0,
    *,
    validation: Mapping[str, torch.Tensor] | None = None,
    resume: str | Path | None = None,
    **options,
) -> History:
    """Train ``model`` on ``data`` by the awake-minus-asleep gradient of eq. 4.

    ``ebm.fit(rbm, {"v": X})`` trains an RBM well without tuning: PCD-1 with 100 chains,
    batches of 10 (as scikit-learn's ``BernoulliRBM``), visible biases initialised from the
    data, Adam decayed linearly over 20 epochs or 20,000 steps (whichever is longer), each
    step taken in centred coordinates (``centering="auto"``: the model stays a plain RBM) at
    ``lr = min(0.03, 0.96 / sqrt(n_visible * n_hidden))``. On the 8x8 digits with 16 hidden
    units (112 epochs, ~4-6 s on one core) that ends at -17.26 to -17.11 nats over 20 seeds
    (exact-gradient optimum about -17.06), past scikit-learn's -20.10 after the first epoch;
    on MNIST (60,000 rows) it stays 20 epochs. See ``benchmarks/RESULTS.md`` and ``Trainer``
    for every option (``centering``, ``schedule``, ``weight_decay``, ``energy_l2``,
    ``metrics``, ``callbacks``, ``progress``, ``checkpoint``, ``checkpoint_every``, ...).

    Args:
        model: the ``EnergyModel`` to train (in place).
        data: ``{name: (n, *shape)}`` observed blocks; the model's other blocks are latent.
        sampler: MCMC kernel for both phases (default ``ebm.Gibbs()``).
        method: ``"pcd"``, ``"cd"``, ``"replay"`` or a ``NegativePhase``.
        k: sampler steps per batch.
        epochs: total epochs (including those of a resumed checkpoint); ``None``: 20, or
            enough for 20,000 optimizer steps (``Trainer.fit``).
        batch_size: rows per optimizer step.
        n_chains: persistent (or replay) chains.
        optimizer: ``None`` (Adam), a name, a ``torch.optim`` class or instance.
        lr: learning rate; ``None``: 0.01, or ``min(0.03, 0.96 / sqrt(n_visible * n_hidden))``
            for the centred update of an ``RBM`` (``Trainer``).
        seed: seed of all training randomness.
        validation: held-out data, evaluated every epoch (``val_`` metrics).
        resume: checkpoint path to continue from.

    Returns:
        ``History``: one dict of metrics per epoch (``loss``, ``time`` in seconds of training,
        and ``recon``, ``pseudo_ll``, ``log_likelihood`` where available, in nats per row).
    """
    trainer = Trainer(model, sampler, method, k, n_chains, batch_size, optimizer, lr, seed, **options)
    return trainer.fit(data, epochs, validation=validation, resume=resume)
