"""The ``ebm`` command: ``train``, ``sample``, ``evaluate``, ``plot`` and ``demo``.

A training run is a directory: ``model.pt`` (``ebm.load``), ``history.json`` (one dict of
metrics per epoch), ``run.json`` (the settings), ``checkpoint.pt`` (to ``--resume``), and
after ``ebm sample`` or ``ebm demo`` ``chains.pt`` (the draws, ``load_chains``). ``ebm plot``
turns a run directory, a chains file or a model file into PNG files.

``ebm train`` and ``ebm demo`` refuse a directory that already holds a run unless given
``--resume`` (train: continue it) or ``--overwrite`` (delete the files ebm wrote there
first); ``ebm sample`` keeps an existing chains file unless given ``--overwrite``. Every
command checks that it can write its output before it starts working.

Under ``torchrun`` (``torchrun --nproc-per-node=N -m ebm train ...``) every process joins the
process group (``ebm.distributed.init``): ``train`` trains data-parallel and ``evaluate``
splits its AIS runs across the ranks; only rank 0 prepares the run directory, prints and
writes files (the other ranks' standard output is discarded). ``ebm train --nproc N``
launches that itself on this machine (``python -m torch.distributed.run --standalone
--nproc-per-node N -m ebm train ...``) and forwards SIGTERM to it.

Errors in arguments or inputs are one line on stderr and a non-zero exit status: 2 for a
bad command line, 1 for anything that fails afterwards.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

import ebm
from ebm import distributed, plot
from ebm.chains import Chains
from ebm.datasets import TOY2D, bars_and_stripes, digits, mnist, toy2d
from ebm.devices import check_device
from ebm.io import atomic_save, remove_stale_temporaries
from ebm.serialization import read_record, seal, verify
from ebm.training.trainer import History, TrainingInterrupted

DATASETS = ("digits", "mnist", "bars-and-stripes", *TOY2D)
MODELS = {"rbm": ebm.RBM, "centered-rbm": ebm.CenteredRBM, "gaussian-rbm": ebm.GaussianRBM}
#: rows drawn from a 2-D toy density for each split
TOY_ROWS = {"train": 5000, "test": 2000}
SAMPLERS = ("gibbs", "langevin", "hmc")
#: draws per chain that ``Chains.summary`` needs
MIN_DRAWS = 2
MODEL_FILE, HISTORY_FILE, RUN_FILE, CHAINS_FILE, CHECKPOINT_FILE = (
    "model.pt",
    "history.json",
    "run.json",
    "chains.pt",
    "checkpoint.pt",
)
#: the figures ``ebm demo`` and ``ebm plot`` write into a run directory
FIGURES = (
    "training_curve.png", "filters.png", "samples.png", "trace.png", "autocorrelation.png", "energy.png",
    "density.png",
)  # fmt: skip
#: every file ebm writes into a run directory (what --overwrite deletes)
RUN_FILES = (MODEL_FILE, HISTORY_FILE, RUN_FILE, CHAINS_FILE, CHECKPOINT_FILE, *FIGURES)
#: what the per-epoch lines and the training curve show, in this order of preference
_METRIC_LABELS = {
    "log_likelihood": "train LL",
    "val_log_likelihood": "test LL",
    "pseudo_ll": "train PL",
    "val_pseudo_ll": "test PL",
    "recon": "recon",
}


class CommandError(Exception):
    """A failure to report to the user as one line, without a traceback."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # One line instead of argparse's usage dump: the usage is one --help away.
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ------------------------------------------------------------------ argument types
def _number(kind: type, low: float, inclusive: bool) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"must be {'>=' if inclusive else '>'} {low}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


positive_int = _number(int, 1, True)
nonnegative_int = _number(int, 0, True)
positive_float = _number(float, 0.0, False)


def _device(name: str) -> torch.device:
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        name = f"cuda:{os.environ['LOCAL_RANK']}"  # under torchrun: one GPU per process
    try:
        return check_device(name, "--device")
    except ValueError as error:
        raise CommandError(str(error)) from None


# ------------------------------------------------------------------ data and run files
def load_dataset(name: str, split: str, root: str | None = None, binarize: str = "threshold") -> torch.Tensor:
    """Data ``(n, n_visible)`` of a named dataset, ``split`` train or test: binary images, or
    points ``(n, 2)`` of a 2-D toy density (fixed seeds, a different one per split)."""
    if name == "digits":
        return digits(split)[0]
    if name == "mnist":
        return mnist(split, root=root, binarize=binarize)[0]
    if name == "bars-and-stripes":
        # every pattern is both the training and the test set: the target is the uniform distribution over them
        return bars_and_stripes(4)
    if name in TOY2D:
        generator = torch.Generator().manual_seed(0 if split == "train" else 1)
        return toy2d(name).sample(TOY_ROWS[split], generator)
    raise CommandError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def save_chains(chains: Chains, path: str | Path) -> None:
    """Write the draws, energies and sampler statistics of ``chains`` with a checksum
    (atomic ``torch.save``)."""
    record = {
        "ebm_chains": 1,
        "draws": {k: v.detach().cpu() for k, v in chains.draws.items() if k not in chains.observed},
        "energy": chains.energy.detach().cpu(),
        "stats": {k: v.detach().cpu() for k, v in chains.stats.items()},
    }
    atomic_save(seal(record), path)


def _torch_record(path: Path, what: str) -> dict:
    if not path.is_file():
        raise CommandError(f"no {what} at {path}")
    try:
        record = read_record(path, what)
        verify(record, path)
    except ValueError as error:
        raise CommandError(str(error)) from None
    return record


def _chains_from_record(record: dict) -> Chains:
    last = {k: v[-1] for k, v in record["draws"].items()}
    return Chains(record["draws"], record["energy"], last, frozenset(), record["stats"])


def load_chains(path: str | Path) -> Chains:
    """Read chains written by ``save_chains`` (``ebm sample``), as ``Chains``."""
    record = _torch_record(Path(path), "chains file written by 'ebm sample'")
    if "ebm_chains" not in record:
        raise CommandError(f"{path} is not a chains file written by 'ebm sample'")
    return _chains_from_record(record)


def _model_path(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise CommandError(f"no model at {path} (give a model file or a run directory holding {MODEL_FILE})")
    return path


def _load_model(path: Path, device: torch.device) -> ebm.EnergyModel:
    try:
        return ebm.load(path, map_location=device)
    except (ValueError, KeyError, RuntimeError, ModuleNotFoundError, AttributeError) as error:
        message = str(error) if str(path) in str(error) else f"cannot load a model from {path}: {error}"
        raise CommandError(message) from None


def _run_settings(model_path: Path) -> dict:
    run_file = model_path.parent / RUN_FILE
    return json.loads(run_file.read_text()) if run_file.is_file() else {}


def check_writable(folder: Path, what: str = "--out") -> None:
    """Create ``folder`` if needed and check that files can be written in it, before any
    work whose results would then be lost."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".ebm-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise CommandError(f"{what}: cannot write to {folder} ({error.strerror or error})") from None


def prepare_run_directory(out: Path, *, resume: bool, overwrite: bool) -> list[Path]:
    """Check that ``out`` may receive a run: a new or empty directory, an existing run with
    ``resume``, or any run with ``overwrite``. Leftover temporary files of a killed write are
    removed. Returns the earlier run's files that ``overwrite`` replaces: delete them with
    ``clear_run`` once everything else has been checked."""
    if resume and overwrite:
        raise CommandError("give --resume (continue the run) or --overwrite (replace it), not both")
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} is a file, not a run directory")
    check_writable(out)
    for name in RUN_FILES:
        remove_stale_temporaries(out / name)
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if existing and not (resume or overwrite):
        raise CommandError(
            f"{out} already holds a run ({', '.join(existing)}): pass --resume to continue it, --overwrite to "
            f"replace it, or another --out"
        )
    return [out / name for name in existing] if overwrite else []


def clear_run(files: Sequence[Path]) -> None:
    """Delete an earlier run's files (``--overwrite``), so that none is left to contradict
    the new run (chains or figures of the old model)."""
    for path in files:
        path.unlink(missing_ok=True)


def _write_json(obj, path: Path) -> None:
    # named like atomic_save's temporaries, so that a leftover one is cleaned up the same way
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


# ------------------------------------------------------------------ training
class EpochPrinter:
    """Training callback printing one line of metrics (nats per row) per epoch."""

    def __init__(self, epochs: int | None = None, stream=None):
        self.epochs, self.stream = epochs, stream or sys.stdout  # None: the trainer's total
        self.evaluation = ""  # the trainer's evaluation plan, printed whenever it changes

    def on_epoch_end(self, trainer, epoch: int, metrics: dict) -> None:
        if trainer.evaluation != self.evaluation:
            self.evaluation = trainer.evaluation
            print(f"({self.evaluation})", file=self.stream, flush=True)
        keys = [k for k in _METRIC_LABELS if k in metrics]
        if "log_likelihood" in metrics:
            keys = [k for k in keys if "pseudo_ll" not in k]
        parts = [f"{_METRIC_LABELS[k]} {metrics[k]:8.3f}" for k in keys]
        total = self.epochs or trainer.epochs
        width = len(str(total))
        print(
            f"epoch {epoch:>{width}}/{total}  " + "  ".join(parts) + f"  ({metrics['time']:.1f} s)",
            file=self.stream,
            flush=True,
        )


def training_curve(history: Sequence[dict]) -> Figure:
    """The training curve as a Figure: train and test log-likelihood on one panel when the
    history has them, else one panel per monitored metric."""
    present = {k for entry in history for k in entry}
    if "log_likelihood" not in present:
        keys = [k for k in _METRIC_LABELS if k in present] or ["loss"]
        return plot.history(history, keys)
    fig = Figure(figsize=(4.5, 3.0), layout="constrained")
    ax = fig.add_subplot()
    for key, label in (("log_likelihood", "train"), ("val_log_likelihood", "test")):
        if key in present:
            plot.history(history, [key], ax=ax)
            ax.lines[-1].set_label(label)
    ax.set_ylabel("exact log-likelihood (nats per row)")
    ax.legend()
    return fig


def _save_figure(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


def train_run(
    model: ebm.EnergyModel,
    train: torch.Tensor,
    test: torch.Tensor,
    out: Path,
    *,
    settings: dict,
    method: str,
    k: int,
    epochs: int | None,
    lr: float | None,
    batch_size: int,
    n_chains: int,
    seed: int,
    metrics="auto",
    resume: bool = False,
    tensorboard: Path | None = None,
) -> History:
    """Train ``model`` into the run directory ``out`` (prepared by ``prepare_run_directory``)
    and write model, history and settings."""
    checkpoint = out / CHECKPOINT_FILE
    if resume and not checkpoint.is_file():
        raise CommandError(f"--resume: no checkpoint at {checkpoint}")
    callbacks = [EpochPrinter(epochs)]
    if isinstance(model, ebm.CenteredRBM):
        callbacks.insert(0, ebm.Centering())
    main_rank = distributed.is_main()
    if tensorboard is not None and main_rank:
        from ebm.callbacks import TensorBoard

        try:
            callbacks.append(TensorBoard(tensorboard))
        except ImportError as err:  # the optional tensorboard package is missing
            raise CommandError(str(err)) from None
    if main_rank:
        _write_json(settings, out / RUN_FILE)
    history = ebm.fit(
        model,
        {"v": train},
        method=method,
        k=k,
        epochs=epochs,
        batch_size=batch_size,
        n_chains=n_chains,
        lr=lr,
        seed=seed,
        validation={"v": test},
        metrics=metrics,
        callbacks=callbacks,
        checkpoint=checkpoint,
        resume=checkpoint if resume else None,
    )
    if main_rank:
        model.save(out / MODEL_FILE)
        _write_json(list(history), out / HISTORY_FILE)
    return history


def cmd_train(args) -> None:
    if args.dataset in TOY2D and args.model != "gaussian-rbm":
        raise CommandError(f"the 2-D density {args.dataset!r} is real-valued: use --model gaussian-rbm")
    device = _device(args.device)
    replaced = []
    if distributed.is_main():
        replaced = prepare_run_directory(args.out, resume=args.resume, overwrite=args.overwrite)
    train = load_dataset(args.dataset, "train", args.data_root, args.binarize).to(device)
    test = load_dataset(args.dataset, "test", args.data_root, args.binarize).to(device)
    model = MODELS[args.model](train.shape[1], args.hidden, seed=args.seed).to(device)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("func", "overwrite")}
    print(f"training {args.model} ({train.shape[1]} visible, {args.hidden} hidden) on {args.dataset}: {len(train)} rows")
    clear_run(replaced)
    train_run(
        model,
        train,
        test,
        args.out,
        settings=settings,
        method=args.method,
        k=args.k,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        n_chains=args.chains,
        seed=args.seed,
        resume=args.resume,
        tensorboard=args.tensorboard,
    )
    print(f"wrote {MODEL_FILE}, {HISTORY_FILE} and {RUN_FILE} to {args.out}")


# ------------------------------------------------------------------ sampling and evaluation
def _sampler(name: str, step_size: float, model: ebm.EnergyModel):
    """Gibbs, or Langevin/HMC for the real-valued blocks with Gibbs for the discrete ones."""
    if name == "gibbs":
        return ebm.Gibbs()
    real = tuple(k for k, d in model.variables.items() if not d.discrete)
    discrete = tuple(k for k in model.variables if k not in real)
    if not real:
        raise CommandError(f"{type(model).__name__} has no real-valued blocks for {name}: use --sampler gibbs")
    gradient = ebm.Langevin(step_size) if name == "langevin" else ebm.HMC(step_size, n_leapfrog=10)
    return ebm.Composite({discrete: ebm.Gibbs(), real: gradient}) if discrete else gradient


def cmd_sample(args) -> None:
    if args.steps // args.thin < MIN_DRAWS:
        raise CommandError(
            f"--steps {args.steps} with --thin {args.thin} keeps {args.steps // args.thin} draw(s) per chain; the "
            f"summary needs at least {MIN_DRAWS}: raise --steps or lower --thin"
        )
    model_path = _model_path(args.model)
    out = args.out or model_path.parent / CHAINS_FILE
    if out.is_dir():
        raise CommandError(f"--out {out} is a directory; give the chains file to write")
    if out.exists() and not args.overwrite:
        raise CommandError(f"{out} already holds chains: pass --overwrite to replace them, or another --out")
    check_writable(out.parent)
    model = _load_model(model_path, _device(args.device))
    chains = ebm.sample(
        model,
        _sampler(args.sampler, args.step_size, model),
        n_chains=args.chains,
        n_steps=args.steps,
        burn_in=args.burn_in,
        thin=args.thin,
        seed=args.seed,
    )
    # the draws are saved before anything else can fail
    save_chains(chains, out)
    print(chains)
    print(chains.summary())
    print(f"wrote {out}")


def cmd_evaluate(args) -> None:
    model_path = _model_path(args.model)
    model = _load_model(model_path, _device(args.device))
    settings = _run_settings(model_path)
    dataset = args.dataset or settings.get("dataset")
    if dataset is None:
        raise CommandError(f"give --dataset: {model_path.parent} has no {RUN_FILE} naming the training data")
    root, binarize = args.data_root or settings.get("data_root"), settings.get("binarize", "threshold")
    data = load_dataset(dataset, args.split, root, binarize).to(model.device)
    try:
        log_z = ebm.log_partition(model, method="exact") if args.method in ("auto", "exact") else None
    except ValueError:
        if args.method == "exact":
            raise
        log_z = None
    if log_z is None:
        print(f"log Z by AIS ({args.ais_betas} betas, {args.ais_runs} runs) ...", flush=True)
        base_data = {"v": load_dataset(dataset, "train", root, binarize).to(model.device)}
        log_z = ebm.log_partition(model, method="ais", n_betas=args.ais_betas, n_runs=args.ais_runs, data=base_data)
    ll = ebm.log_likelihood(model, {"v": data}, log_z=log_z).double()
    row_se = ll.std().item() / math.sqrt(len(ll)) if len(ll) > 1 else 0.0
    print(f"log Z = {float(log_z):.4f} ± {log_z.stderr:.4f} nats ({log_z.method})")
    print(
        f"mean {args.split} log-likelihood on {dataset}: {ll.mean().item():.4f} nats per row "
        f"(± {row_se:.4f} over {len(ll)} rows, ± {log_z.stderr:.4f} from log Z)"
    )


# ------------------------------------------------------------------ plots
def _chain_plots(chains: Chains, out: Path) -> list[Path]:
    written = [
        _save_figure(plot.trace(chains), out / "trace.png"),
        _save_figure(plot.autocorrelation(chains), out / "autocorrelation.png"),
        _save_figure(plot.energy(chains), out / "energy.png"),
    ]
    try:
        written.append(_save_figure(plot.samples(chains), out / "samples.png"))
    except ValueError:
        pass  # the block is not image-shaped: no grid
    return written


def _model_plots(model: ebm.EnergyModel, out: Path, chains: Chains | None = None) -> list[Path]:
    if tuple(model.variables.get("v", ebm.Binary(1)).shape) == (2,):
        return [_save_figure(plot.density_2d(model, chains, block="v"), out / "density.png")]
    if not isinstance(getattr(model, "W", None), torch.Tensor):
        return []
    try:
        return [_save_figure(plot.filters(model), out / "filters.png")]
    except ValueError:
        return []  # visible units that do not form a square image


def cmd_plot(args) -> None:
    path = Path(args.path)
    if not path.exists():
        raise CommandError(f"{path} does not exist: give a run directory, a chains file or a model file")
    out = args.out or (path if path.is_dir() else path.parent)
    check_writable(out)
    written = []
    if path.is_file():
        record = _torch_record(path, "chains or model file")
        if "ebm_chains" in record:
            written += _chain_plots(_chains_from_record(record), out)
        elif "ebm_model" in record:
            written += _model_plots(_load_model(path, torch.device("cpu")), out)
        else:
            raise CommandError(f"{path} is neither a chains file ('ebm sample') nor a model file ('ebm train')")
    else:
        if (path / HISTORY_FILE).is_file():
            history = json.loads((path / HISTORY_FILE).read_text())
            written.append(_save_figure(training_curve(history), out / "training_curve.png"))
        chains = load_chains(path / CHAINS_FILE) if (path / CHAINS_FILE).is_file() else None
        if (path / MODEL_FILE).is_file():
            written += _model_plots(_load_model(path / MODEL_FILE, torch.device("cpu")), out, chains)
        if chains is not None:
            written += _chain_plots(chains, out)
    if not written:
        raise CommandError(f"nothing to plot in {path}: no training history, image-shaped model or chains")
    print(f"wrote {', '.join(p.name for p in written)} to {out}")


# ------------------------------------------------------------------ demo
def _independent_baseline(train: torch.Tensor, test: torch.Tensor) -> float:
    """Mean test log-likelihood (nats) of independent pixels with add-one smoothed marginals."""
    p = (train.sum(0) + 1) / (len(train) + 2)
    return (test @ p.log() + (1 - test) @ (1 - p).log()).mean().item()


def cmd_demo(args) -> None:
    # 64x16 products are too small to gain from threads; with other work on the cores,
    # thread synchronisation made training several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _demo(args)
    finally:
        torch.set_num_threads(threads)


def _demo(args) -> None:
    out: Path = args.out
    replaced = prepare_run_directory(out, resume=False, overwrite=args.overwrite)
    epochs = args.epochs or (3 if args.fast else None)  # None: ebm.fit's default
    train, test = digits("train")[0], digits("test")[0]
    model = ebm.RBM(64, 16, seed=args.seed)
    clear_run(replaced)
    print(f"RBM, 64 visible x 16 hidden, PCD-1 on the 8x8 digits: {len(train)} training rows, {len(test)} test rows")
    print(
        f"exact log-likelihood (nats per row) by enumerating the 2^16 hidden states; "
        f"independent pixels reach {_independent_baseline(train, test):.3f} on the test rows"
    )
    start = time.perf_counter()
    settings = {"command": "demo", "model": "rbm", "dataset": "digits", "hidden": 16, "epochs": epochs, "seed": args.seed}
    history = train_run(
        model,
        train,
        test,
        out,
        settings=settings,
        method="pcd",
        k=1,
        epochs=epochs,
        lr=None,
        batch_size=10,
        n_chains=100,
        seed=args.seed,
        metrics=["log_likelihood"],
    )
    print(
        f"trained in {time.perf_counter() - start:.1f} s; final test log-likelihood {history[-1]['val_log_likelihood']:.3f}"
    )

    # long enough for the trained RBM's chains to mix (R-hat <= 1.01), so the demo shows no warning
    steps, burn_in, thin = (200, 0, 10) if args.fast else (16000, 1000, 20)
    chains = ebm.sample(model, ebm.Gibbs(), n_chains=64, n_steps=steps, burn_in=burn_in, thin=thin, seed=args.seed)
    save_chains(chains, out / CHAINS_FILE)
    # p(v | h) of the last sweep: the image each chain is "thinking of", without pixel noise
    with torch.no_grad():
        means = model.conditional("v", chains.last).probs
    _save_figure(plot.samples(means, block="p(v | h)"), out / "samples.png")
    _save_figure(plot.filters(model), out / "filters.png")
    _save_figure(training_curve(history), out / "training_curve.png")
    print(f"wrote {MODEL_FILE}, samples.png, filters.png, training_curve.png, {HISTORY_FILE} and {CHAINS_FILE} to {out}/")


# ------------------------------------------------------------------ the parser
def build_parser() -> argparse.ArgumentParser:
    """The ``ebm`` argument parser with its subcommands."""
    parser = _Parser(prog="ebm", description="Energy-based models trained with MCMC.")
    parser.add_argument("--version", action="version", version=f"ebm {ebm.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(func=func)
        return sub

    demo = command("demo", cmd_demo, "train an RBM on the bundled 8x8 digits (offline, under a minute) and plot it")
    demo.add_argument("--out", type=Path, default=Path("ebm-demo"), help="output directory (default: ebm-demo)")
    demo.add_argument("--epochs", type=positive_int, help="training epochs (default: ebm.fit's, 112; 3 with --fast)")
    demo.add_argument("--fast", action="store_true", help="a few epochs and short chains: a smoke test")
    demo.add_argument("--seed", type=nonnegative_int, default=0)
    demo.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")

    train = command("train", cmd_train, "train a model on a dataset into a run directory")
    train.add_argument("--model", choices=sorted(MODELS), default="rbm")
    train.add_argument("--dataset", choices=DATASETS, default="digits", help="2-D densities need --model gaussian-rbm")
    train.add_argument("--hidden", type=positive_int, default=16, help="hidden units (default 16)")
    train.add_argument("--method", choices=("pcd", "cd", "replay"), default="pcd", help="negative phase (default pcd)")
    train.add_argument("--k", type=positive_int, default=1, help="sampler steps per batch (default 1)")
    train.add_argument(
        "--epochs", type=positive_int, help="training epochs (default: ebm.fit's, 20 or enough for 20,000 steps)"
    )
    train.add_argument(
        "--lr",
        type=positive_float,
        help="learning rate of Adam (default: ebm.fit's, min(0.03, 0.96/sqrt(visible*hidden)) for an RBM, else 0.01)",
    )
    train.add_argument("--batch-size", type=positive_int, default=10)
    train.add_argument("--chains", type=positive_int, default=100, help="persistent chains (default 100)")
    train.add_argument("--seed", type=nonnegative_int, default=0)
    train.add_argument("--out", type=Path, default=Path("ebm-run"), help="run directory (default: ebm-run)")
    train.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    train.add_argument("--data-root", help="folder of the MNIST IDX files (default: $EBM_DATA/mnist or the cache)")
    train.add_argument("--binarize", choices=("threshold", "stochastic"), default="threshold", help="MNIST binarization")
    train.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    train.add_argument("--tensorboard", type=Path, metavar="DIR", help="log metrics, samples and filters for TensorBoard")
    train.add_argument(
        "--nproc",
        type=positive_int,
        help="train data-parallel in N processes on this machine, launched by torchrun (one GPU each with --device cuda)",
    )
    train.add_argument(
        "--overwrite", action="store_true", help="replace an earlier run in --out (deletes the files ebm wrote there)"
    )

    sample = command("sample", cmd_sample, "draw MCMC chains from a trained model and save them")
    sample.add_argument("model", help="a model file or a run directory")
    sample.add_argument("--sampler", choices=SAMPLERS, default="gibbs")
    sample.add_argument("--step-size", type=positive_float, default=0.05, help="for langevin and hmc (default 0.05)")
    sample.add_argument("--chains", type=positive_int, default=64)
    sample.add_argument("--steps", type=positive_int, default=1000, help="steps after burn-in (default 1000)")
    sample.add_argument("--burn-in", type=nonnegative_int, default=100)
    sample.add_argument("--thin", type=positive_int, default=10, help="keep every thin-th step (default 10)")
    sample.add_argument("--seed", type=nonnegative_int, default=0)
    sample.add_argument("--out", type=Path, help=f"chains file (default: {CHAINS_FILE} beside the model)")
    sample.add_argument("--device", default="cpu")
    sample.add_argument("--overwrite", action="store_true", help="replace an existing chains file")

    evaluate = command("evaluate", cmd_evaluate, "mean log-likelihood of a trained model on held-out data")
    evaluate.add_argument("model", help="a model file or a run directory")
    evaluate.add_argument("--dataset", choices=DATASETS, help="default: the run's training dataset")
    evaluate.add_argument("--split", choices=("train", "test"), default="test")
    evaluate.add_argument("--data-root", help="folder of the MNIST IDX files")
    evaluate.add_argument("--method", choices=("auto", "exact", "ais"), default="auto", help="how to get log Z")
    evaluate.add_argument("--ais-betas", type=positive_int, default=14_500)
    evaluate.add_argument("--ais-runs", type=positive_int, default=100)
    evaluate.add_argument("--device", default="cpu")

    plots = command("plot", cmd_plot, "plot a run directory (training curve, filters, chains), a chains or a model file")
    plots.add_argument("path", help="a run directory, a chains file from 'ebm sample' or a model file")
    plots.add_argument("--out", type=Path, help="folder for the PNG files (default: beside the input)")
    return parser


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """The command that runs ``ebm`` with ``argv`` less ``--nproc`` in ``nproc`` processes
    under torchrun on this machine (a standalone rendezvous on a free port)."""
    rest, skip = [], False
    for token in argv:
        name = token.split("=")[0]
        if skip or (len(name) > 2 and "--nproc".startswith(name)):  # argparse takes unique prefixes too
            skip = not skip and "=" not in token
            continue
        rest.append(token)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "ebm", *rest]


def launch_torchrun(nproc: int, argv: Sequence[str]) -> int:
    """Run ``torchrun_command`` and return its exit status (128 + the signal's number when a
    forwarded signal stopped it). SIGTERM sent to this process is forwarded (torchrun passes
    it to every rank, which write a last checkpoint and stop); SIGINT is ignored here, as
    Ctrl-C reaches torchrun and the ranks directly."""
    child = subprocess.Popen(torchrun_command(nproc, argv))
    forwarded = []

    def forward(signum, frame):
        forwarded.append(signum)
        child.send_signal(signum)

    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
    }
    try:
        status = child.wait()
        return 128 + forwarded[0] if forwarded and status else status
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ebm`` command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if getattr(args, "nproc", None) is not None:
        launched = os.environ.get("LOCAL_WORLD_SIZE")  # set by torchrun in each process it starts
        if launched is None:
            return launch_torchrun(args.nproc, argv)
        if int(launched) != args.nproc:
            print(
                f"ebm {args.command}: error: --nproc {args.nproc}, but torchrun started {launched} processes "
                "per node: drop --nproc under torchrun",
                file=sys.stderr,
            )
            return 1
    try:
        if args.command in ("train", "evaluate") and distributed.init()[0] != 0:
            sys.stdout = open(os.devnull, "w")  # for the life of this process: rank 0 alone prints
        args.func(args)
    except (CommandError, ValueError, TypeError, KeyError, OSError, RuntimeError, FloatingPointError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        one_line = " ".join(str(message).split())
        print(f"ebm {args.command}: error: {one_line}", file=sys.stderr)
        return 1
    except TrainingInterrupted as stop:
        # preempted (SIGTERM) or interrupted: the checkpoint is written; --resume continues
        print(f"ebm {args.command}: {stop}; run it again with --resume", file=sys.stderr)
        return 128 + stop.signal
    except KeyboardInterrupt:
        print(f"ebm {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
