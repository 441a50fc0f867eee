"""Data parallelism on ``torch.distributed``: what ``ebm.fit`` and AIS do when a process
group is initialised (under ``torchrun``, or by the user).

Everything here is a no-op without a process group, or with a world of one process, so
single-process runs behave exactly as before. Collectives go through ``collective``, which
turns a failed or timed-out collective (a rank died, the network broke) into one
``RankFailure`` naming the operation; the timeout is the process group's (``init``'s
``timeout``, default ``DEFAULT_TIMEOUT`` seconds). Every collective takes its tensors on
``collective_device()``: the CPU for gloo, the rank's current CUDA device for NCCL (which
reduces GPU tensors only), whatever device the model lives on.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist

#: seconds a rank waits in a collective for the others before it stops with ``RankFailure``
DEFAULT_TIMEOUT = 300.0


class RankFailure(RuntimeError):
    """A collective across the ranks failed or timed out: another rank died, hung or was
    stopped. Training stops on every surviving rank instead of hanging."""


def world() -> tuple[int, int]:
    """``(rank, world size)`` of the current process group; ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process writes files, logs and progress bars (rank 0, or no process group)."""
    return world()[0] == 0


def init(backend: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> tuple[int, int]:
    """Initialise the default process group from ``torchrun``'s environment variables
    (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) unless one exists already;
    ``backend`` defaults to NCCL with CUDA, gloo otherwise. ``timeout`` (seconds) bounds
    every collective: a rank that dies makes the others stop with ``RankFailure`` after it.
    Returns ``(rank, world size)``; ``(0, 1)`` when ``WORLD_SIZE`` is unset."""
    if dist.is_initialized() or "WORLD_SIZE" not in os.environ:
        return world()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        # one GPU per process: NCCL's collectives (and gather_objects) use the current device
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    return world()


def collective_device(backend: str | None = None) -> torch.device:
    """The device of the tensors that a collective of ``backend`` (default: the current
    process group's) takes: the current CUDA device for NCCL, the CPU otherwise (gloo, and
    mixed backends such as ``"cpu:gloo,cuda:nccl"`` that route CPU tensors to gloo)."""
    if backend is None:
        backend = dist.get_backend() if dist.is_available() and dist.is_initialized() else "gloo"
    if str(backend).lower() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def collective(what: str, operation: Callable, *args, **kwargs):
    """Run a ``torch.distributed`` collective; a failure or timeout becomes ``RankFailure``."""
    try:
        return operation(*args, **kwargs)
    except (RuntimeError, dist.DistError) as error:
        rank, size = world()
        raise RankFailure(
            f"rank {rank} of {size}: the {what} across ranks failed, another rank probably died or hung "
            f"(timeout set by ebm.distributed.init or init_process_group): {' '.join(str(error).split())[:300]}"
        ) from error


def _on_collective_device(what: str, operation: Callable, tensor: torch.Tensor, *args) -> torch.Tensor:
    """Run ``operation(tensor, *args)`` in place on a copy of ``tensor`` on the backend's device
    (``tensor`` itself when it is there already); returns the result on ``tensor``'s device."""
    moved = tensor.to(collective_device())
    collective(what, operation, moved, *args)
    return moved.to(tensor.device)


def local_count(total: int, rank: int | None = None, size: int | None = None) -> int:
    """This rank's share of ``total`` items split over the world (the first ``total % size``
    ranks get one more)."""
    if rank is None or size is None:
        rank, size = world()
    return total // size + (rank < total % size)


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank, in one flat broadcast."""
    if world()[1] == 1:
        return
    tensors = [t.data for t in [*module.parameters(), *module.buffers()] if t.numel()]
    flat = _on_collective_device("parameter broadcast", dist.broadcast, torch._utils._flatten_dense_tensors(tensors), 0)
    for t, synced in zip(tensors, torch._utils._unflatten_dense_tensors(flat, tensors), strict=True):
        t.copy_(synced)


def average_gradients(params: Sequence[torch.Tensor]) -> None:
    """Replace each parameter's gradient by its mean over the ranks: one all-reduce of a
    single flat bucket (a missing gradient counts as zeros, so every rank sends the same
    layout)."""
    if world()[1] == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = _on_collective_device("gradient all-reduce", dist.all_reduce, torch._utils._flatten_dense_tensors(grads))
    flat /= world()[1]
    for p, synced in zip(params, torch._utils._unflatten_dense_tensors(flat, grads), strict=True):
        p.grad = synced


def mean_over_ranks(x: torch.Tensor, what: str = "metric reduction") -> torch.Tensor:
    """The mean of ``x`` over the ranks (a new tensor; ``x`` itself without a process group)."""
    if world()[1] == 1:
        return x
    return _on_collective_device(what, dist.all_reduce, x.clone()) / world()[1]


def max_over_ranks(values: Sequence[int], what: str = "flag reduction") -> list[int]:
    """Each of ``values`` (flags, signal numbers: integers) replaced by its maximum over the
    ranks, in one all-reduce; every rank gets the same list."""
    if world()[1] == 1:
        return [int(v) for v in values]
    t = torch.tensor([int(v) for v in values], dtype=torch.int64, device=collective_device())
    collective(what, dist.all_reduce, t, dist.ReduceOp.MAX)
    return [int(v) for v in t.tolist()]


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (every rank gets the same answer)."""
    return bool(max_over_ranks([flag], "stop-flag reduction")[0])


def gather_rows(x: torch.Tensor, what: str = "gather") -> torch.Tensor:
    """Every rank's ``(n_r, ...)`` tensor concatenated along dim 0 in rank order, on every
    rank (ranks may hold different numbers of rows)."""
    if world()[1] == 1:
        return x
    parts: list = [None] * world()[1]
    collective(what, dist.all_gather_object, parts, x.detach().cpu())
    return torch.cat(parts).to(x.device)


def gather_objects(obj, what: str = "gather") -> list:
    """Every rank's picklable ``obj``, in rank order, on every rank."""
    if world()[1] == 1:
        return [obj]
    parts: list = [None] * world()[1]
    collective(what, dist.all_gather_object, parts, obj)
    return parts


def barrier(what: str = "barrier") -> None:
    """Wait until every rank gets here (nothing without a process group)."""
    if world()[1] > 1:
        collective(what, dist.barrier)


def shard_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s own random stream (chains, AIS runs): ``seed`` on rank 0,
    so that rank 0 of a run draws what a single process would."""
    return seed + 1_000_003 * rank
