"""Kills and preemption: mid-epoch checkpoints and the SIGTERM/SIGINT handler resume
bit for bit like the uninterrupted run."""

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import ebm
from ebm.training import TrainingInterrupted

ROOT = Path(__file__).resolve().parents[1]


def data():
    generator = torch.Generator().manual_seed(0)
    return {"v": (torch.rand(120, 9, generator=generator) < 0.3).float()}


OPTIONS = dict(k=2, epochs=3, batch_size=8, n_chains=10, lr=0.05, seed=3, progress=False)


def same_run(model, history, reference, expected):
    for name, p in reference.named_parameters():
        assert torch.equal(p, dict(model.named_parameters())[name]), name
    assert len(history) == len(expected)
    for got, want in zip(history, expected, strict=True):
        assert {k: v for k, v in got.items() if k != "time"} == {k: v for k, v in want.items() if k != "time"}


@pytest.fixture(scope="module")
def uninterrupted():
    model = ebm.RBM(9, 4, seed=0)
    return model, ebm.fit(model, data(), **OPTIONS)


class CopyCheckpointAt:
    """Keeps a copy of the checkpoint as it stood after a given batch, as a kill right
    there would leave it."""

    def __init__(self, epoch, batch, path, copy):
        self.epoch, self.batch, self.path, self.copy = epoch, batch, path, copy

    def on_batch_end(self, trainer, batch, negatives):
        if trainer.epoch + 1 == self.epoch and trainer.batch == self.batch + 1:
            shutil.copy(self.path, self.copy)


@pytest.mark.parametrize("epoch, batch", [(1, 3), (2, 14)])
def test_resume_from_a_mid_epoch_checkpoint(tmp_path, uninterrupted, epoch, batch):
    path, copy = tmp_path / "ckpt.pt", tmp_path / "killed.pt"
    ebm.fit(
        ebm.RBM(9, 4, seed=0),
        data(),
        checkpoint=path,
        checkpoint_batches=1,
        callbacks=[CopyCheckpointAt(epoch, batch, path, copy)],
        **OPTIONS,
    )
    state = torch.load(copy, weights_only=True)
    assert state["epoch"] == epoch - 1 and state["position"]["batch"] == batch
    resumed = ebm.RBM(9, 4, seed=1)  # everything must come from the checkpoint
    history = ebm.fit(resumed, data(), checkpoint=copy, resume=copy, **OPTIONS)
    same_run(resumed, history, *uninterrupted)


def test_checkpoint_every_few_seconds_by_default(tmp_path):
    trainer = ebm.Trainer(ebm.RBM(9, 4), checkpoint=tmp_path / "c.pt")
    assert 0 < trainer.checkpoint_seconds <= 60


class SignalAt:
    def __init__(self, epoch, batch, signum):
        self.epoch, self.batch, self.signum = epoch, batch, signum

    def on_batch_end(self, trainer, batch, negatives):
        if trainer.epoch + 1 == self.epoch and trainer.batch == self.batch:
            # without ebm's handler the signal would end the test session itself
            assert signal.getsignal(self.signum) not in (signal.SIG_DFL, signal.default_int_handler)
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum, epoch, batch", [(signal.SIGTERM, 2, 5), (signal.SIGINT, 1, 15)])
def test_a_signal_writes_a_checkpoint_and_stops(tmp_path, uninterrupted, signum, epoch, batch):
    path = tmp_path / "ckpt.pt"
    before = signal.getsignal(signum)
    with pytest.raises(TrainingInterrupted, match=f"{signal.Signals(signum).name}.*resume=") as info:
        ebm.fit(ebm.RBM(9, 4, seed=0), data(), checkpoint=path, callbacks=[SignalAt(epoch, batch, signum)], **OPTIONS)
    assert info.value.signal == signum
    assert signal.getsignal(signum) is before  # the previous handler is back
    state = torch.load(path, weights_only=True)
    if batch < 15:  # 120 rows in batches of 8: 15 batches, the last ends the epoch
        assert state["epoch"] == epoch - 1 and state["position"]["batch"] == batch
    else:
        assert state["epoch"] == epoch and state["position"] is None
    resumed = ebm.RBM(9, 4, seed=1)
    history = ebm.fit(resumed, data(), checkpoint=path, resume=path, **OPTIONS)
    same_run(resumed, history, *uninterrupted)


def test_a_second_fit_after_a_signal_finishes_the_interrupted_epoch(tmp_path, uninterrupted):
    options = {k: v for k, v in OPTIONS.items() if k != "epochs"}
    model = ebm.RBM(9, 4, seed=0)
    trainer = ebm.Trainer(model, checkpoint=tmp_path / "ckpt.pt", callbacks=[SignalAt(2, 5, signal.SIGTERM)], **options)
    with pytest.raises(TrainingInterrupted):
        trainer.fit(data(), epochs=OPTIONS["epochs"])
    trainer.callbacks.clear()
    same_run(model, trainer.fit(data(), epochs=OPTIONS["epochs"]), *uninterrupted)


def test_mid_epoch_checkpoint_needs_the_same_data(tmp_path):
    path, copy = tmp_path / "ckpt.pt", tmp_path / "killed.pt"
    ebm.fit(
        ebm.RBM(9, 4),
        data(),
        checkpoint=path,
        checkpoint_batches=1,
        callbacks=[CopyCheckpointAt(1, 3, path, copy)],
        **OPTIONS,
    )
    with pytest.raises(ValueError, match="mid-epoch on data of 120 rows, not 64"):
        ebm.fit(ebm.RBM(9, 4), {"v": data()["v"][:64]}, resume=copy, **OPTIONS)


# ---------------------------------------------------------------------- a real process, killed
SCRIPT = textwrap.dedent(
    """
    import sys, torch, ebm
    from ebm.training import TrainingInterrupted

    torch.set_num_threads(1)
    checkpoint, out, resume = sys.argv[1], sys.argv[2], sys.argv[3] == "resume"
    generator = torch.Generator().manual_seed(0)
    X = (torch.rand(2000, 16, generator=generator) < 0.3).float()
    model = ebm.RBM(16, 8, seed=0)
    try:
        # seconds of training even with the compiled kernels, so every kill lands inside it
        history = ebm.fit(
            model, {"v": X}, k=5, epochs=48, batch_size=10, seed=1, progress=False,
            checkpoint=checkpoint, checkpoint_seconds=0.05, resume=checkpoint if resume else None,
        )
    except TrainingInterrupted as stop:
        sys.exit(128 + stop.signal)
    torch.save({"model": model.state_dict(), "loss": history["loss"], "ll": history["log_likelihood"]}, out)
    """
)


def written(path):
    """Identifies one write of ``path`` (each atomic save is a new file)."""
    return (path.stat().st_ino, path.stat().st_mtime_ns) if path.exists() else None


def run(script, checkpoint, out, resume, kill_after=None, signum=signal.SIGKILL):
    """Run the training script; with ``kill_after``, send ``signum`` that many seconds after it
    first writes its checkpoint. Returns the exit code."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    before = written(checkpoint)
    process = subprocess.Popen(
        [sys.executable, str(script), str(checkpoint), str(out), "resume" if resume else "new"], env=env
    )
    if kill_after is not None:
        deadline = time.monotonic() + 120
        while written(checkpoint) == before and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(kill_after)
        if process.poll() is None:
            process.send_signal(signum)
    return process.wait(timeout=300)


@pytest.mark.slow
def test_killed_runs_resume_bit_for_bit(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    assert run(script, tmp_path / "whole.pt", tmp_path / "whole.out", resume=False) == 0
    expected = torch.load(tmp_path / "whole.out", weights_only=True)

    rng = random.Random(0)
    checkpoint, out = tmp_path / "killed.pt", tmp_path / "killed.out"
    kills = [(signal.SIGKILL, -signal.SIGKILL), (signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGKILL, -signal.SIGKILL)]
    positions = []
    for i, (signum, code) in enumerate(kills):
        returned = run(script, checkpoint, out, resume=i > 0, kill_after=rng.uniform(0.1, 1.0), signum=signum)
        assert returned == code, (signum, returned)
        state = torch.load(checkpoint, weights_only=True)
        positions.append((state["epoch"], state["position"] and state["position"]["batch"]))
    assert len(set(positions)) == len(kills), positions  # the kills landed at different places
    assert not out.exists()
    assert run(script, checkpoint, out, resume=True) == 0
    got = torch.load(out, weights_only=True)
    for name, value in expected["model"].items():
        assert torch.equal(got["model"][name], value), name
    assert got["loss"] == expected["loss"] and got["ll"] == expected["ll"]


@pytest.mark.slow
def test_ebm_train_preempted_by_sigterm_resumes_bit_for_bit(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "ebm.cli", "train", "--dataset", "digits", "--hidden", "8", "--epochs", "8"]
    subprocess.run([*command, "--out", str(tmp_path / "whole")], env=env, check=True, capture_output=True)

    process = subprocess.Popen(
        [*command, "--out", str(tmp_path / "run")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    for line in process.stdout:
        if line.startswith("epoch 1/"):
            process.send_signal(signal.SIGTERM)
            break
    _, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM" in err and "--resume" in err and len(err.strip().splitlines()) == 1
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] < 8
    subprocess.run([*command, "--out", str(tmp_path / "run"), "--resume"], env=env, check=True, capture_output=True)
    whole, resumed = ebm.load(tmp_path / "whole" / "model.pt"), ebm.load(tmp_path / "run" / "model.pt")
    for name, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
