"""Data-parallel training and AIS on ``torch.distributed`` (gloo on CPU): two processes
launched by the test on 127.0.0.1, each running ``tests/distributed_worker.py``."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ebm
from ebm import distributed
from ebm.evaluation.ais import weight_summary

WORKER = Path(__file__).with_name("distributed_worker.py")
#: seconds a whole launch may take (imports included) before the test fails
LAUNCH_SECONDS = 120
#: the process group's collective timeout in the workers
COLLECTIVE_SECONDS = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(scenario: str, tmp_path: Path, world: int = 2, command: list[str] | None = None):
    """Run ``world`` ranks of ``scenario`` (or of ``command``, as torchrun would); returns each
    rank's result (``None`` if it wrote none), exit status and output."""
    env = dict(
        os.environ,
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        WORLD_SIZE=str(world),
        OMP_NUM_THREADS="1",
        EBM_TEST_TIMEOUT=str(COLLECTIVE_SECONDS),
        PYTHONPATH=os.pathsep.join([str(Path(ebm.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    )
    procs = [
        subprocess.Popen(
            command or [sys.executable, str(WORKER), scenario, str(tmp_path)],
            env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(world)
    ]
    codes, logs = [], []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=LAUNCH_SECONDS)
            codes.append(p.returncode)
            logs.append(out.decode(errors="replace"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    results = []
    for r in range(world):
        path = tmp_path / f"rank{r}.pt"
        results.append(torch.load(path) if path.exists() else None)
    return results, codes, logs


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fit_ais")


@pytest.fixture(scope="module")
def fit_and_ais(run_dir):
    """One 2-rank launch (the imports dominate its time) that trains, runs AIS, samples,
    and trains again stopped and resumed."""
    return launch("fit_ais", run_dir)


def test_parameters_identical_on_every_rank_after_every_step(fit_and_ais):
    (r0, r1), codes, logs = fit_and_ais
    assert codes == [0, 0], logs
    assert r0["world"] == 2
    # 60 rows in global batches of 16: 4 steps an epoch, 2 epochs
    assert r0["steps"].shape[0] == 8
    assert torch.equal(r0["steps"], r1["steps"])
    assert r0["loss"] == r1["loss"]
    # the ranks did train (the parameters moved at every step)
    assert (r0["steps"].diff(dim=0).abs().amax(dim=1) > 0).all()


def test_ais_over_two_ranks_equals_one_process_with_the_same_run_seeds(fit_and_ais):
    (r0, r1), codes, logs = fit_and_ais
    assert codes == [0, 0], logs
    assert r0["value"] == r1["value"] and r0["stderr"] == r1["stderr"]
    # one process: the runs of rank 0 (5 runs, seed 7) and of rank 1 (4 runs, its shard seed)
    from distributed_worker import small_problem

    model, data = small_problem()
    model.load_state_dict(r0["trained"])
    parts = [
        ebm.log_partition(model, method="ais", n_betas=40, n_runs=n, seed=distributed.shard_seed(7, r), data=data)
        for r, n in ((0, 5), (1, 4))
    ]
    log_w = torch.cat([p.info["log_weights"] for p in parts])
    assert torch.equal(r0["log_weights"], log_w)
    summary = weight_summary(log_w)
    assert r0["value"] == pytest.approx(summary["estimate"] + parts[0].info["log_z0"], rel=1e-12, abs=1e-12)
    assert r0["stderr"] == pytest.approx(summary["stderr"], rel=1e-12, abs=1e-15)


@pytest.mark.filterwarnings("ignore:Chains not mixed")  # a few steps suffice to compare the runs
def test_sample_splits_chains_across_ranks_and_gathers_them(fit_and_ais):
    (r0, r1), codes, logs = fit_and_ais
    assert codes == [0, 0], logs
    assert r0["draws"].shape == (6, 5, 6)
    for key in ("draws", "energy", "last"):
        assert torch.equal(r0[key], r1[key])
    # one process: rank 0's 3 chains and rank 1's 2, each from its shard seed, side by side
    from distributed_worker import small_problem

    model, _ = small_problem()
    model.load_state_dict(r0["trained"])
    parts = [
        ebm.sample(model, ebm.Gibbs(), n_chains=n, n_steps=6, seed=distributed.shard_seed(11, r), progress=False)
        for r, n in ((0, 3), (1, 2))
    ]
    assert torch.equal(r0["draws"], torch.cat([p["v"] for p in parts], dim=1))
    assert torch.equal(r0["energy"], torch.cat([p.energy for p in parts], dim=1))
    assert torch.equal(r0["last"], torch.cat([p.last["v"] for p in parts]))


def test_resumed_two_rank_run_equals_the_uninterrupted_one(fit_and_ais):
    (r0, r1), codes, logs = fit_and_ais
    assert codes == [0, 0], logs
    for r in (r0, r1):
        assert torch.equal(r["resume"]["straight"], r["resume"]["resumed"])
        straight, resumed = r["resume"]["losses"]
        assert straight == resumed
    assert torch.equal(r0["resume"]["resumed"], r1["resume"]["resumed"])


def test_a_two_rank_checkpoint_resumes_only_on_two_ranks(fit_and_ais, run_dir):
    from distributed_worker import small_problem

    model, data = small_problem()
    with pytest.raises(ValueError, match="written by 2 processes, not 1"):
        ebm.fit(model, data, epochs=2, batch_size=16, n_chains=10, lr=0.05, seed=3, resume=run_dir / "stopped.pt")


def test_a_dead_rank_stops_the_other_with_an_error(tmp_path):
    (r0, r1), codes, logs = launch("die", tmp_path)
    assert codes[1] == 3 and r1 is None
    assert codes[0] == 0, logs
    assert "rank 0 of 2" in r0["error"] and "another rank probably died" in r0["error"]


def test_without_a_process_group_nothing_changes():
    assert distributed.world() == (0, 1)
    assert distributed.local_count(10) == 10
    assert distributed.shard_seed(4, 0) == 4
    x = torch.arange(3.0)
    assert distributed.mean_over_ranks(x) is x and distributed.gather_rows(x) is x


@pytest.mark.slow
def test_cli_trains_under_torchrun_variables(tmp_path):
    """``torchrun --nproc-per-node=2 -m ebm train ...``: rank 0 alone prints and writes."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "ebm", "train", "--dataset", "digits", "--epochs", "1", "--out", str(out)]
    _, codes, logs = launch("cli", tmp_path, command=command)
    assert codes == [0, 0], logs
    assert "epoch 1/1" in logs[0] and logs[1] == ""
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "history.json", "model.pt", "run.json"]
