"""The CLI never destroys an earlier run or finished work, and reads bad files in one line."""

import json
import os
from pathlib import Path

import pytest
import torch
from test_cli import run

from ebm import cli
from ebm.chains import Chains

pytestmark = pytest.mark.usefixtures("one_thread")
TRAIN = ["train", "--dataset", "bars-and-stripes", "--hidden", "4", "--batch-size", "4"]


def fails_in_one_line(argv, capsys, message) -> str:
    code, out, err = run(argv, capsys)
    assert code == 1 and len(err.splitlines()) == 1 and message in err, err
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-epoch run directory with chains and figures (not to be modified: copy it)."""
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    assert cli.main([*map(str, TRAIN), "--epochs", "2", "--out", str(run_dir)]) == 0
    assert cli.main(["sample", str(run_dir), "--chains", "4", "--steps", "4", "--thin", "2"]) == 0
    for name in cli.FIGURES:  # what 'ebm plot' writes (plotting itself is tested elsewhere)
        (run_dir / name).write_bytes(b"\x89PNG")
    return run_dir


def copy_run(src, dst):
    dst.mkdir()
    for path in src.iterdir():
        (dst / path.name).write_bytes(path.read_bytes())
    return dst


def test_second_train_into_a_run_is_refused_and_keeps_the_run(trained, tmp_path, capsys):
    run_dir = copy_run(trained, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    fails_in_one_line([*TRAIN, "--epochs", "1", "--out", run_dir], capsys, "already holds a run")
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
    fails_in_one_line([*TRAIN, "--out", run_dir, "--resume", "--overwrite"], capsys, "not both")


def test_overwrite_replaces_every_file_of_the_earlier_run(trained, tmp_path, capsys):
    run_dir = copy_run(trained, tmp_path / "run")
    (run_dir / "notes.txt").write_text("mine")
    assert (run_dir / "chains.pt").is_file() and (run_dir / "filters.png").is_file()
    code, _, _ = run([*TRAIN, "--epochs", "1", "--out", run_dir, "--overwrite"], capsys)
    assert code == 0
    assert len(json.loads((run_dir / "history.json").read_text())) == 1
    # the old chains and figures would contradict the new model: gone; the user's own file stays
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "checkpoint.pt", "history.json", "model.pt", "notes.txt", "run.json",
    ]  # fmt: skip


def test_demo_refuses_an_earlier_run(trained, tmp_path, capsys):
    run_dir = copy_run(trained, tmp_path / "run")
    fails_in_one_line(["demo", "--fast", "--out", run_dir], capsys, "already holds a run")


def test_resume_cleans_a_temporary_checkpoint_left_by_a_kill(trained, tmp_path, capsys):
    run_dir = copy_run(trained, tmp_path / "run")
    (run_dir / "checkpoint.pt.x1y2z3.tmp").write_bytes(b"half written")
    (run_dir / "history.json.4242.tmp").write_text("[")
    code, _, _ = run([*TRAIN, "--epochs", "3", "--out", run_dir, "--resume"], capsys)
    assert code == 0 and not list(run_dir.glob("*.tmp"))
    assert len(json.loads((run_dir / "history.json").read_text())) == 3


def test_json_write_killed_before_its_rename_is_cleaned_up(tmp_path, monkeypatch):
    class Killed(BaseException):
        pass

    def killed(self, target):
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(Path, "replace", killed)
        with pytest.raises(Killed):
            cli._write_json([{"epoch": 1}], tmp_path / "history.json")
    assert list(tmp_path.glob("*.tmp"))
    cli.prepare_run_directory(tmp_path, resume=False, overwrite=False)
    assert not list(tmp_path.iterdir())


def test_resume_with_another_lr_is_one_line(trained, tmp_path, capsys):
    run_dir = copy_run(trained, tmp_path / "run")
    fails_in_one_line([*TRAIN, "--epochs", "3", "--lr", "0.5", "--out", run_dir, "--resume"], capsys, "same lr")


def test_malicious_checkpoint_on_resume_runs_nothing(trained, tmp_path, capsys):
    run_dir = copy_run(trained, tmp_path / "run")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"ebm_checkpoint": 2, "model": Payload()}, run_dir / "checkpoint.pt")
    fails_in_one_line([*TRAIN, "--epochs", "3", "--out", run_dir, "--resume"], capsys, "could run code")
    assert not marker.exists()


def test_runaway_learning_rate_fails_in_one_line(tmp_path, capsys):
    out = fails_in_one_line([*TRAIN, "--epochs", "2", "--lr", "1e6", "--out", tmp_path / "run"], capsys, "diverged")
    assert "epoch 1/2" not in out and not (tmp_path / "run" / "model.pt").exists()


def test_second_sample_keeps_the_earlier_chains_unless_told(trained, tmp_path, capsys):
    run_dir = copy_run(trained, tmp_path / "run")
    before = (run_dir / "chains.pt").read_bytes()
    argv = ["sample", run_dir, "--chains", "2", "--steps", "2", "--thin", "1"]
    fails_in_one_line(argv, capsys, "already holds chains: pass --overwrite")
    assert (run_dir / "chains.pt").read_bytes() == before
    assert run([*argv, "--overwrite"], capsys)[0] == 0
    assert cli.load_chains(run_dir / "chains.pt")["v"].shape == (2, 2, 16)


def test_sample_refuses_too_few_draws_before_sampling(trained, capsys):
    out = fails_in_one_line(["sample", trained, "--steps", "10", "--out", "x.pt"], capsys, "keeps 1 draw(s)")
    assert out == ""


def test_sample_saves_the_draws_before_the_summary(trained, tmp_path, capsys, monkeypatch):
    def broken(self, *args, **kwargs):
        raise ValueError("the summary broke")

    monkeypatch.setattr(Chains, "summary", broken)
    out = tmp_path / "chains.pt"
    fails_in_one_line(["sample", trained, "--chains", "4", "--steps", "4", "--thin", "1", "--out", out], capsys, "broke")
    assert cli.load_chains(out)["v"].shape == (4, 4, 16)


def test_unwritable_out_fails_before_the_work(trained, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    out = fails_in_one_line(
        ["sample", trained, "--steps", "4", "--thin", "1", "--out", blocker / "chains.pt"], capsys, "cannot write to"
    )
    assert "Chains(" not in out
    fails_in_one_line(["plot", trained, "--out", blocker / "figs"], capsys, "cannot write to")
    fails_in_one_line([*TRAIN, "--out", blocker / "run"], capsys, "cannot write to")


def damaged(data: bytes, kind: str) -> bytes:
    if kind == "empty":
        return b""
    if kind == "truncated":
        return data[: len(data) // 2]
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 8]) + data[middle + 8 :]


@pytest.mark.parametrize("kind", ["empty", "truncated", "flipped"])
def test_bad_model_chains_and_checkpoint_files_are_one_line(trained, tmp_path, capsys, kind):
    for name in ("model.pt", "chains.pt"):
        path = tmp_path / name
        path.write_bytes(damaged((trained / name).read_bytes(), kind))
        code, _, err = run(["plot", path, "--out", tmp_path / "figs"], capsys)
        assert code == 1 and len(err.splitlines()) == 1 and str(path) in err, err
    run_dir = copy_run(trained, tmp_path / "run")
    checkpoint = run_dir / "checkpoint.pt"
    checkpoint.write_bytes(damaged(checkpoint.read_bytes(), kind))
    fails_in_one_line([*TRAIN, "--epochs", "3", "--out", run_dir, "--resume"], capsys, str(checkpoint))
