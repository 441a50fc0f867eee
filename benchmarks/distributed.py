"""Data-parallel PCD training on ``torch.distributed``: samples/s with 1 and N processes.

Trains a 784x500 RBM by PCD-1 (Adam, ``metrics=None``) on the first ``--rows`` rows of
binarized MNIST for one epoch, once with a single process and once with ``--world``
processes (gloo on CPU, NCCL with ``--device cuda``), each rank on ``--threads`` threads
with a per-rank batch of ``--batch-size`` rows and ``--chains`` chains (weak scaling: the
global batch and chains grow with the world). It prints the training samples/s of each, the
scaling efficiency ``rate(N) / (N * rate(1))`` and the time of the gradient all-reduce per
step (one flat bucket of the RBM's 393,284 parameters, timed on its own in the N-process
run, best of ``--repeats``). Ratios are measured in the same run; the processes talk over
127.0.0.1 only.

    python benchmarks/distributed.py                       # ~1 min on 2 idle CPU cores
    python benchmarks/distributed.py --rows 1200 --repeats 1   # a smoke run (~20 s)
    python benchmarks/distributed.py --device cuda --world 2 --rows 60000   # 2 GPUs
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per process)")
    p.add_argument("--world", type=int, default=2, help="processes of the parallel run")
    p.add_argument("--rows", type=int, default=6000, help="MNIST training rows (one epoch over them)")
    p.add_argument("--hidden", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=100, help="rows per step on each rank")
    p.add_argument("--chains", type=int, default=100, help="persistent chains on each rank")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--repeats", type=int, default=3, help="all-reduce timings (best of)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # output file of one rank
    return p.parse_args(argv)


def worker(args: argparse.Namespace) -> None:
    """One rank: train one epoch, time the all-reduce, write the rank's numbers."""
    import torch

    import ebm
    from ebm import distributed
    from ebm.datasets import mnist

    torch.set_num_threads(args.threads)
    rank, world = distributed.init()
    device = torch.device(f"cuda:{rank}" if args.device == "cuda" else "cpu")
    data = mnist("train", root=args.data_root)[0][: args.rows].to(device)
    model = ebm.RBM(784, args.hidden, seed=0).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if world > 1:
        torch.distributed.barrier()
    sync()
    start = time.perf_counter()
    ebm.fit(
        model,
        {"v": data},
        epochs=1,
        batch_size=args.batch_size * world,
        n_chains=args.chains * world,
        metrics=None,
        progress=False,
        checkpoint=None,
    )
    sync()
    seconds = time.perf_counter() - start
    allreduce = None
    if world > 1:
        params = list(model.parameters())
        for p in params:
            p.grad = torch.ones_like(p)
        timings = []
        for _ in range(args.repeats):
            torch.distributed.barrier()
            sync()
            began = time.perf_counter()
            for _ in range(10):
                distributed.average_gradients(params)
            sync()
            timings.append((time.perf_counter() - began) / 10)
        allreduce = min(timings)
        torch.distributed.destroy_process_group()
    Path(args.worker).write_text(json.dumps({"rank": rank, "seconds": seconds, "allreduce": allreduce}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: argparse.Namespace, world: int, out: Path) -> list[dict]:
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(world))
    env["OMP_NUM_THREADS"] = str(args.threads)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    argv = list(sys.argv[1:])
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, *argv, "--worker", str(out / f"w{world}-r{r}.json")],
            env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
        )
        for r in range(world)
    ]
    for p in procs:
        if p.wait(timeout=1800) != 0:
            raise SystemExit(f"a rank of the {world}-process run failed (exit status {p.returncode})")
    return [json.loads((out / f"w{world}-r{r}.json").read_text()) for r in range(world)]


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        one = launch(args, 1, Path(tmp))
        many = launch(args, args.world, Path(tmp))
    rate1 = args.rows / one[0]["seconds"]
    rate_n = args.rows / max(r["seconds"] for r in many)
    steps_n = -(-args.rows // (args.batch_size * args.world))
    allreduce = max(r["allreduce"] for r in many)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"RBM 784x{args.hidden}, PCD-1, {args.rows} MNIST rows, per-rank batch {args.batch_size}, {args.device}")
    print(f"1 process:   {rate1:9.0f} samples/s")
    print(f"{args.world} processes: {rate_n:9.0f} samples/s")
    print(f"scaling efficiency: {rate_n / (args.world * rate1):.2f}  (rate({args.world}) / ({args.world} x rate(1)))")
    print(
        f"gradient all-reduce: {allreduce * 1e3:.2f} ms per step "
        f"({allreduce * steps_n / max(r['seconds'] for r in many):.0%} of the {args.world}-process epoch)"
    )
    print(f"load average at the end: {load:.2f}")


if __name__ == "__main__":
    main()
