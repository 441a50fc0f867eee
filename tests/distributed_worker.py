"""One rank of the distributed tests (``tests/test_distributed.py`` launches it).

Usage: ``python distributed_worker.py SCENARIO OUT_DIR`` with torchrun's variables (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) set; writes ``OUT_DIR/rank{r}.pt``.
"""

import os
import sys

import torch

import ebm
from ebm import distributed


def small_problem():
    """A 6x4 RBM and 60 binary rows, the same on every rank."""
    g = torch.Generator().manual_seed(5)
    data = (torch.rand(60, 6, generator=g) < torch.linspace(0.2, 0.8, 6)).float()
    return ebm.RBM(6, 4, seed=1), {"v": data}


class Recorder:
    """Keeps the flat parameters after every optimizer step."""

    def __init__(self):
        self.steps = []

    def on_batch_end(self, trainer, batch, negatives):
        self.steps.append(torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()]))


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
    flat = [torch.cat([p.detach().flatten() for p in m.parameters()]) for m in (straight, resumed)]
    return {"straight": flat[0], "resumed": flat[1], "losses": (losses, resumed_losses)}


def main(scenario: str, out: str) -> None:
    rank, size = distributed.init(timeout=float(os.environ.get("EBM_TEST_TIMEOUT", "20")))
    result = {"world": size}
    model, data = small_problem()
    if scenario == "fit_ais":
        if rank == 1:
            # a different start on rank 1: the broadcast must replace it with rank 0's
            torch.nn.init.normal_(model.W)
        recorder = Recorder()
        history = ebm.fit(model, data, epochs=2, batch_size=16, n_chains=10, lr=0.05, seed=3, callbacks=[recorder])
        result.update(steps=torch.stack(recorder.steps), loss=history["loss"], trained=model.state_dict())
        log_z = ebm.log_partition(model, method="ais", n_betas=40, n_runs=9, seed=7, data=data)
        result.update(value=float(log_z), stderr=log_z.stderr, log_weights=log_z.info["log_weights"])
        chains = ebm.sample(model, ebm.Gibbs(), n_chains=5, n_steps=6, seed=11, progress=False)
        result.update(draws=chains["v"], energy=chains.energy, last=chains.last["v"])
        result.update(resume=resumed_against_straight(out))
    elif scenario == "die":
        if rank == 1:
            os._exit(3)  # dies without a word, as a killed process does
        try:
            ebm.fit(model, data, epochs=50, batch_size=16, n_chains=10, seed=3)
            result["error"] = None
        except distributed.RankFailure as error:
            result["error"] = str(error)
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    if scenario != "die":
        torch.distributed.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # a process group whose peer died may abort at interpreter exit


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
