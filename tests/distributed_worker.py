"""One rank of the distributed tests (``tests/test_distributed.py`` launches it).

Usage: ``python distributed_worker.py SCENARIO OUT_DIR`` with torchrun's variables (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) set; writes ``OUT_DIR/rank{r}.pt``.
"""

import os
import signal
import sys
import time
import warnings

import torch

import ebm
from ebm import distributed
from ebm.training import TrainingInterrupted


def small_problem():
    """A 6x4 RBM and 60 binary rows, the same on every rank."""
    g = torch.Generator().manual_seed(5)
    data = (torch.rand(60, 6, generator=g) < torch.linspace(0.2, 0.8, 6)).float()
    return ebm.RBM(6, 4, seed=1), {"v": data}


class Recorder:
    """Keeps the flat parameters after every optimizer step, and this rank's data rows and
    chains of the step."""

    def __init__(self):
        self.steps, self.rows, self.chains = [], [], []

    def on_batch_end(self, trainer, batch, negatives):
        self.steps.append(torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()]))
        self.rows.append(batch["v"].clone())
        self.chains.append(negatives["v"].clone())


#: the digits log-likelihood comparison: RBM 64x16 trained by SGD, global batch and chains
DIGITS = dict(epochs=2, batch_size=100, n_chains=100, lr=0.05, optimizer="sgd", progress=False)
#: its ``fit`` seeds on one process and on two ranks (disjoint: independent runs)
DIGITS_SEEDS = {1: range(0, 8), 2: range(100, 108)}


def digits_log_likelihoods(seeds) -> torch.Tensor:
    """The exact mean log-likelihood (nats) of the digits training rows after ``DIGITS``'s
    training from one start, one value per ``fit`` seed (on one process or on every rank)."""
    from ebm.datasets import digits

    train = {"v": digits("train")[0]}
    out = []
    for seed in seeds:
        model = ebm.RBM(64, 16, seed=0)
        ebm.fit(model, train, seed=seed, **DIGITS)
        out.append(ebm.log_likelihood(model, train).mean())
    return torch.stack(out)


class Stop(Exception):
    pass


class StopAt:
    """Stops training (an exception, on every rank) at optimizer step ``step``."""

    def __init__(self, step: int):
        self.step, self.done = step, 0

    def on_batch_end(self, trainer, batch, negatives):
        self.done += 1
        if self.done == self.step:
            raise Stop


class SignalAt:
    """Sends ``signum`` to this very process at optimizer step ``step`` (on this rank only)."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum, self.done = step, signum, 0

    def on_batch_end(self, trainer, batch, negatives):
        self.done += 1
        if self.done == self.step:
            signal.raise_signal(self.signum)  # to this thread: handled before the call returns


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def resumed_against_straight(out: str) -> dict:
    """2 epochs of 4 steps straight through, and stopped at step 8 then resumed from the
    checkpoint written after step 7 (epoch 2, batch 3): parameters and losses of both."""
    options = dict(epochs=2, batch_size=16, n_chains=10, lr=0.05, seed=3, checkpoint_batches=3, checkpoint_seconds=None)
    straight, data = small_problem()
    losses = ebm.fit(straight, data, checkpoint=os.path.join(out, "straight.pt"), **options)["loss"]
    stopped, _ = small_problem()
    path = os.path.join(out, "stopped.pt")
    try:
        ebm.fit(stopped, data, checkpoint=path, callbacks=[StopAt(8)], **options)
    except Stop:
        pass
    resumed, _ = small_problem()
    resumed_losses = ebm.fit(resumed, data, checkpoint=path, resume=path, **options)["loss"]
    return {"straight": flat(straight), "resumed": flat(resumed), "losses": (losses, resumed_losses)}


def signalled(out: str, name: str, options: dict, signal_rank: int, step: int, signum: int) -> dict:
    """Training with ``options`` (a checkpoint at epoch ends only) that rank ``signal_rank``
    alone receives ``signum`` at step ``step`` of, then resumed from the last checkpoint:
    where each rank stopped, its ``TrainingInterrupted``, and the resumed parameters."""
    path = os.path.join(out, name)
    model, data = small_problem()
    rank = distributed.world()[0]
    steps = Recorder()
    callbacks = [steps] + ([SignalAt(step, signum)] if rank == signal_rank else [])
    try:
        ebm.fit(model, data, checkpoint=path, callbacks=callbacks, checkpoint_seconds=None, **options)
        stop = None
    except TrainingInterrupted as error:
        stop = {"signal": error.signal, "message": str(error)}
    stopped_at = len(steps.steps)
    resumed, _ = small_problem()
    losses = ebm.fit(resumed, data, checkpoint=path, resume=path, checkpoint_seconds=None, **options)["loss"]
    return {"stop": stop, "stopped_at": stopped_at, "resumed": flat(resumed), "losses": losses}


def dies(rank: int, dying: int, result: dict, out: str) -> None:
    """Rank ``dying`` writes ``result`` and dies without a word (as a killed process does);
    the others train on and record the error they stop with and when."""
    model, data = small_problem()
    if rank == dying:
        torch.save(result, os.path.join(out, f"rank{rank}.pt"))
        sys.stdout.flush()
        os._exit(3)
    start = time.perf_counter()
    try:
        ebm.fit(model, data, epochs=50, batch_size=16, n_chains=10, seed=3)
        result["error"] = None
    except distributed.RankFailure as error:
        result["error"] = str(error)
    result["seconds_to_error"] = time.perf_counter() - start


def main(scenario: str, out: str) -> None:
    rank, size = distributed.init(timeout=float(os.environ.get("EBM_TEST_TIMEOUT", "20")))
    result = {"world": size}
    model, data = small_problem()
    options = dict(epochs=2, batch_size=16, n_chains=10, lr=0.05, seed=3)
    if rank > 0:
        # a different start on the other ranks: the broadcast must replace it with rank 0's
        torch.nn.init.normal_(model.W)
    recorder = Recorder()
    # 60 rows in global batches of 16 (the last of 12), 10 chains: uneven over 3 ranks
    history = ebm.fit(model, data, callbacks=[recorder], **options)
    result.update(steps=torch.stack(recorder.steps), loss=history["loss"], trained=model.state_dict())
    result.update(rows=recorder.rows, chains=recorder.chains)
    n_runs, n_chains = {"fit_ais": (9, 5), "three": (10, 5)}[scenario]
    log_z = ebm.log_partition(model, method="ais", n_betas=40, n_runs=n_runs, seed=7, data=data)
    result.update(value=float(log_z), stderr=log_z.stderr, log_weights=log_z.info["log_weights"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Chains not mixed")  # a few steps suffice to compare the runs
        chains = ebm.sample(model, ebm.Gibbs(), n_chains=n_chains, n_steps=6, seed=11, progress=False)
    result.update(draws=chains["v"], energy=chains.energy, last=chains.last["v"])
    if scenario == "fit_ais":
        result.update(resume=resumed_against_straight(out))
        # SIGTERM to rank 1 alone at step 6 (epoch 2, batch 2): a mid-epoch last checkpoint
        result.update(signalled=signalled(out, "signalled.pt", options, 1, 6, signal.SIGTERM))
        result.update(digits=digits_log_likelihoods(DIGITS_SEEDS[2]))
        dies(rank, 1, result, out)
    else:
        # SIGINT to rank 2 alone at step 4, the end of epoch 1: the epoch-end checkpoint
        result.update(signalled=signalled(out, "signalled.pt", options, 2, 4, signal.SIGINT))
        dies(rank, 2, result, out)
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    sys.stdout.flush()
    os._exit(0)  # a process group whose peer died may abort at interpreter exit


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
