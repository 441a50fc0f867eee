import json
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
import torch

from ebm import cli

COMMANDS = ["demo", "train", "sample", "evaluate", "plot"]
pytestmark = pytest.mark.usefixtures("one_thread")


def run(argv, capsys) -> tuple[int, str, str]:
    """``ebm ARGV`` in-process: (exit status, stdout, stderr)."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_console_script_is_declared():
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("ebm") == "ebm.cli:main"


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)], ids=["ebm", *COMMANDS])
def test_help(command, capsys):
    code, out, _ = run([*command, "--help"], capsys)
    assert code == 0 and out.startswith("usage: ebm")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--epochs", "0"], "--epochs: must be >= 1"),
        (["train", "--lr", "fast"], "--lr: expected a number"),
        (["train", "--dataset", "cifar"], "invalid choice: 'cifar'"),
        (["demo", "--bogus"], "unrecognized arguments: --bogus"),
        (["sample"], "required: model"),
        ([], "required: COMMAND"),
    ],
)
def test_bad_arguments_are_one_line(argv, message, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and message in err


def test_bad_argument_in_a_subprocess_has_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "ebm.cli", "train", "--batch-size", "-3"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "ebm train: error: argument --batch-size: must be >= 1, got -3 (see ebm train --help)"
    ]


def test_failures_after_parsing_are_one_line(tmp_path, capsys):
    for argv, message in (
        (["sample", tmp_path / "nothing"], "no model at"),
        (["plot", tmp_path / "nothing"], "does not exist"),
        (["train", "--device", "warp-drive"], "unknown device"),
        (["train", "--dataset", "moons"], "use --model gaussian-rbm"),
    ):
        code, _, err = run(argv, capsys)
        assert code == 1 and len(err.splitlines()) == 1 and message in err, err
    not_chains = tmp_path / "x.pt"
    torch.save({"a": 1}, not_chains)
    code, _, err = run(["plot", not_chains], capsys)
    assert code == 1 and "neither a chains file" in err and len(err.splitlines()) == 1
    not_torch = tmp_path / "notes.txt"
    not_torch.write_text("hello\n" * 50)
    code, _, err = run(["plot", not_torch], capsys)
    assert code == 1 and "is not a chains or model file" in err and len(err.splitlines()) == 1


def test_demo_fast(tmp_path, capsys):
    threads = torch.get_num_threads()
    code, out, _ = run(["demo", "--fast", "--out", tmp_path / "demo"], capsys)
    assert code == 0
    assert torch.get_num_threads() == threads
    for name in ("model.pt", "samples.png", "filters.png", "training_curve.png", "history.json", "chains.pt"):
        assert (tmp_path / "demo" / name).stat().st_size > 0, name
    assert str(tmp_path / "demo") in out
    epoch_lines = [line for line in out.splitlines() if line.startswith("epoch")]
    assert len(epoch_lines) == 3 and all("test LL" in line for line in epoch_lines)
    history = json.loads((tmp_path / "demo" / "history.json").read_text())
    # three epochs of PCD already beat independent pixels (-24.5 nats) on the test rows
    assert history[-1]["val_log_likelihood"] > -23.5


def test_train_defaults_are_fits_and_epoch_lines_show_the_resolved_total(capsys):
    args = cli.build_parser().parse_args(["train"])
    assert args.epochs is None and args.lr is None  # ebm.fit resolves both (epochs by steps, lr by model size)

    class Trainer:  # what EpochPrinter reads of the trainer
        evaluation, epochs = "", 112

    cli.EpochPrinter().on_epoch_end(Trainer(), 3, {"time": 1.0})
    assert "epoch   3/112" in capsys.readouterr().out


def test_train_sample_evaluate_plot(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, out, _ = run(
        ["train", "--dataset", "bars-and-stripes", "--hidden", "6", "--epochs", "2", "--out", run_dir], capsys
    )
    assert code == 0 and "epoch 2/2" in out
    assert json.loads((run_dir / "run.json").read_text())["dataset"] == "bars-and-stripes"
    assert len(json.loads((run_dir / "history.json").read_text())) == 2

    code, out, _ = run(["sample", run_dir, "--chains", "8", "--steps", "40", "--thin", "2"], capsys)
    assert code == 0
    chains = cli.load_chains(run_dir / "chains.pt")
    assert chains["v"].shape == (20, 8, 16) and chains.energy.shape == (20, 8)

    code, out, _ = run(["evaluate", run_dir], capsys)
    assert code == 0 and "(exact)" in out and "log-likelihood on bars-and-stripes" in out

    code, out, _ = run(["plot", run_dir, "--out", tmp_path / "figs"], capsys)
    assert code == 0
    for name in ("training_curve.png", "filters.png", "trace.png", "autocorrelation.png", "energy.png", "samples.png"):
        assert (tmp_path / "figs" / name).is_file(), name

    code, out, _ = run(["plot", run_dir / "model.pt", "--out", tmp_path / "model-only"], capsys)
    assert code == 0 and (tmp_path / "model-only" / "filters.png").is_file()

    code, _, _ = run(["train", "--dataset", "bars-and-stripes", "--epochs", "3", "--hidden", "6", "--out", run_dir,
                      "--resume"], capsys)  # fmt: skip
    assert code == 0 and len(json.loads((run_dir / "history.json").read_text())) == 3


def test_gaussian_rbm_on_a_2d_density(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["train", "--model", "gaussian-rbm", "--dataset", "gaussians", "--hidden", "4", "--epochs", "1"]
    code, out, _ = run([*argv, "--batch-size", "500", "--out", run_dir], capsys)
    assert code == 0 and "test LL" in out
    # Langevin moves the real block v, Gibbs the binary h
    assert run(["sample", run_dir, "--sampler", "langevin", "--chains", "4", "--steps", "20", "--thin", "1"], capsys)[0] == 0
    assert cli.load_chains(run_dir / "chains.pt")["v"].shape == (20, 4, 2)
    code, out, _ = run(["plot", run_dir], capsys)
    assert code == 0 and (run_dir / "density.png").is_file()
