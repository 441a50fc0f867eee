"""Binarized MNIST, RBM with 500 hidden units: train, then test log-likelihood by AIS and RAISE.

Protocol of Salakhutdinov & Murray (2008): pixels binarized stochastically once with a fixed
seed; ``log Z`` by AIS from the base-rate model (visible biases fitted to the training
set) with ~14,500 betas (500 on [0, 0.5), 4,000 on [0.5, 0.9), 10,000 on [0.9, 1]) and
100 runs; the test log-likelihood is ``mean(−F(v)) − log Ẑ`` with the interval from
``log(mean w ± 3 sd(w)/√n)``. RAISE (Burda et al. 2015) adds a stochastic lower bound.

    python benchmarks/mnist_rbm.py --device cuda                     # the full run (~7 min on an H200)
    python benchmarks/mnist_rbm.py --epochs 25 --chains 100 --raise-rows 300 --threads 1   # a short CPU run

The defaults are the best configuration measured (benchmarks/RESULTS.md): a centered RBM,
PCD-1 with 1,000 persistent chains, SGD (momentum 0.9) at lr 0.01 decayed linearly, 190
epochs, batch 100, offsets' rate 0.01.

Anchors (500 hidden units): CD-25 −86.34 (S&M 2008); centered PCD-1 −84.86, plain PCD-1
−130.81 (Melchior, Fischer & Wiskott 2016).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import hardware

import ebm
import ebm.datasets


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--data-root", default=None, help="folder with the MNIST IDX gz files (default: ebm's lookup)")
    p.add_argument("--hidden", type=int, default=500)
    p.add_argument("--model", choices=("centered", "plain"), default="centered")
    p.add_argument("--centering-rate", type=float, default=0.01, help="offsets' moving-average rate")
    p.add_argument("--sampler", choices=("gibbs", "pt"), default="gibbs")
    p.add_argument("--pt-replicas", type=int, default=5, help="PT: replicas, betas geometric from 1 to --pt-beta-min")
    p.add_argument("--pt-beta-min", type=float, default=0.5)
    p.add_argument("--method", choices=("pcd", "cd"), default="pcd")
    p.add_argument("--k", type=int, default=1, help="sampler steps per batch")
    p.add_argument("--chains", type=int, default=1000, help="persistent chains")
    p.add_argument("--epochs", type=int, default=190)
    p.add_argument("--max-train-seconds", type=float, default=None, help="stop training after the epoch that passes this")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--optimizer", default="sgd", help="sgd (momentum 0.9), adam, adamw")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--schedule", default="linear", help="learning-rate schedule: linear, cosine, constant")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--ais-betas", type=int, default=14_500)
    p.add_argument("--ais-runs", type=int, default=100)
    p.add_argument("--raise-betas", type=int, default=None, help="RAISE steps (default: --ais-betas)")
    p.add_argument("--raise-rows", type=int, default=10_000, help="test rows for RAISE (the first ones)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--save", default=None, help="save the trained model here")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 products: log Z needs the precision
    t0 = time.perf_counter()
    train, _ = ebm.datasets.mnist("train", root=args.data_root, binarize="stochastic", seed=args.seed)
    test, _ = ebm.datasets.mnist("test", root=args.data_root, binarize="stochastic", seed=args.seed + 1)
    train, test = train.to(device), test.to(device)
    model_cls = ebm.CenteredRBM if args.model == "centered" else ebm.RBM
    rbm = model_cls(784, args.hidden, seed=args.seed).to(device)
    callbacks = [ebm.Centering(rate=args.centering_rate)] if args.model == "centered" else []
    sampler = ebm.Gibbs()
    if args.sampler == "pt":
        sampler = ebm.ParallelTempering(ebm.Gibbs(), args.pt_replicas, beta_min=args.pt_beta_min)
    print(f"hardware: {hardware(args.device)}", flush=True)
    print(f"settings: {vars(args)}", flush=True)

    class Log:
        def on_epoch_end(self, trainer, epoch, metrics):
            print(f"epoch {epoch:4d}  time {metrics['time']:8.1f} s  loss {metrics['loss']:+.4f}", flush=True)
            if args.max_train_seconds is not None and metrics["time"] > args.max_train_seconds:
                print(f"stopping: training time passed {args.max_train_seconds} s", flush=True)
                trainer.stop_training = True

    start = time.perf_counter()
    history = ebm.fit(
        rbm,
        {"v": train},
        sampler=sampler,
        method=args.method,
        k=args.k,
        epochs=args.epochs,
        batch_size=args.batch_size,
        n_chains=args.chains,
        optimizer=args.optimizer,
        lr=args.lr,
        seed=args.seed,
        schedule=args.schedule,
        weight_decay=args.weight_decay,
        metrics=None,
        callbacks=[*callbacks, Log()],
        progress=False,
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_time = time.perf_counter() - start
    if args.save:
        rbm.save(args.save)

    start = time.perf_counter()
    log_z = ebm.log_partition(
        rbm, method="ais", n_betas=args.ais_betas, n_runs=args.ais_runs, schedule="sm", data={"v": train}, seed=args.seed
    )
    with torch.no_grad():
        neg_free = -rbm.free_energy({"v": test}).double()
        train_neg_free = -rbm.free_energy({"v": train}).double()
    test_ll = neg_free.mean().item() - float(log_z)
    train_ll = train_neg_free.mean().item() - float(log_z)
    ais_time = time.perf_counter() - start
    print(f"AIS log Z = {float(log_z):.3f} ± {log_z.stderr:.3f}, ESS {log_z.ess:.1f}/{args.ais_runs} ({ais_time:.1f} s)")
    lo, hi = log_z.interval
    interval = (neg_free.mean().item() - hi, neg_free.mean().item() - lo)
    print(f"test LL {test_ll:.3f} nats (interval [{interval[0]:.3f}, {interval[1]:.3f}]), train LL {train_ll:.3f}")

    start = time.perf_counter()
    rows = {"v": test[: args.raise_rows]}
    bounds = ebm.log_likelihood_bounds(
        rbm, rows, reverse_betas=args.raise_betas or args.ais_betas, base_data={"v": train}, log_z=log_z, seed=args.seed
    )
    raise_time = time.perf_counter() - start
    print(f"RAISE on {rows['v'].shape[0]} test rows: {bounds} ({raise_time:.1f} s)")
    total = time.perf_counter() - t0
    print(f"wall time: total {total:.1f} s (training {train_time:.1f} s, AIS {ais_time:.1f} s, RAISE {raise_time:.1f} s)")
    results = {
        "hardware": hardware(args.device),
        "settings": vars(args),
        "log_z": float(log_z),
        "log_z_stderr": log_z.stderr,
        "log_z_interval": log_z.interval,
        "ess": log_z.ess,
        "test_ll": test_ll,
        "test_ll_interval": interval,
        "train_ll": train_ll,
        "epochs_run": len(history),
        "raise_rows": rows["v"].shape[0],
        "raise_lower": bounds.lower,
        "raise_lower_stderr": bounds.lower_stderr,
        "upper_same_rows": bounds.upper,
        "time_train_s": train_time,
        "time_ais_s": ais_time,
        "time_raise_s": raise_time,
        "time_total_s": total,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
