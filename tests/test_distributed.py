"""Data-parallel training and AIS on ``torch.distributed`` (gloo on CPU): two and three
processes launched by the test on 127.0.0.1, each running ``tests/distributed_worker.py``."""

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
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


#: the false-failure rate of the digits log-likelihood comparison
ALPHA = 1e-3


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One 2-rank launch (the imports dominate its time): trains, runs AIS, samples, trains
    again stopped and resumed, and signalled and resumed, trains the digits RBM over seeds,
    then rank 1 dies while rank 0 trains."""
    out = tmp_path_factory.mktemp("two_ranks")
    return launch("fit_ais", out), out


@pytest.fixture(scope="module")
def three_ranks(tmp_path_factory):
    """One 3-rank launch: the same training, AIS and sampling split unevenly (10 chains,
    batches of 16, 10 AIS runs, 5 sampled chains), a signal to rank 2, then rank 2 dies."""
    out = tmp_path_factory.mktemp("three_ranks")
    return launch("three", out, world=3), out


@pytest.fixture(params=[2, 3], ids=["2ranks", "3ranks"])
def launched(request):
    return request.getfixturevalue({2: "two_ranks", 3: "three_ranks"}[request.param])


def finished(launched) -> list[dict]:
    """Each rank's result, once every rank but the last (which dies on purpose) exited cleanly."""
    (results, codes, logs), _ = launched
    assert codes == [0] * (len(codes) - 1) + [3], logs
    assert all(r is not None and r["world"] == len(codes) for r in results), logs
    return results


def as_integers(rows: torch.Tensor) -> torch.Tensor:
    """Binary rows ``(n, 6)`` as the sorted integers they spell (a multiset of rows)."""
    return (rows * 2 ** torch.arange(rows.shape[1])).sum(1).long().sort().values


def test_parameters_identical_on_every_rank_after_every_step(launched):
    results = finished(launched)
    r0 = results[0]
    # 60 rows in global batches of 16: 4 steps an epoch, 2 epochs
    assert r0["steps"].shape[0] == 8
    for r in results[1:]:
        assert torch.equal(r0["steps"], r["steps"])
        assert r0["loss"] == r["loss"]
    # the ranks did train (the parameters moved at every step)
    assert (r0["steps"].diff(dim=0).abs().amax(dim=1) > 0).all()


def test_each_step_splits_the_global_batch_and_the_chains_across_ranks(launched):
    from distributed_worker import small_problem

    results = finished(launched)
    world = len(results)
    data = small_problem()[1]["v"]
    for step in range(8):
        batch = 12 if step % 4 == 3 else 16  # the last batch of an epoch holds the 12 rows left
        for rank, r in enumerate(results):
            assert r["rows"][step].shape[0] == distributed.local_count(batch, rank, world)
            assert r["chains"][step].shape[0] == distributed.local_count(10, rank, world)
        # every rank's chains come from its own random stream (the last two ranks hold as many)
        assert not torch.equal(results[-2]["chains"][step], results[-1]["chains"][step])
    for epoch in range(2):
        # over an epoch the ranks together see every row once
        seen = torch.cat([rows for r in results for rows in r["rows"][4 * epoch : 4 * epoch + 4]])
        assert torch.equal(as_integers(seen), as_integers(data))


def test_ais_over_ranks_equals_one_process_with_the_same_run_seeds(launched):
    from distributed_worker import small_problem

    results = finished(launched)
    world, r0 = len(results), results[0]
    for r in results[1:]:
        assert r0["value"] == r["value"] and r0["stderr"] == r["stderr"]
    # one process: each rank's runs (9 over 2 ranks: 5 + 4; 10 over 3: 4 + 3 + 3) from its shard seed
    model, data = small_problem()
    model.load_state_dict(r0["trained"])
    n_runs = r0["log_weights"].shape[0]
    assert n_runs == {2: 9, 3: 10}[world]
    parts = [
        ebm.log_partition(
            model,
            method="ais",
            n_betas=40,
            n_runs=distributed.local_count(n_runs, r, world),
            seed=distributed.shard_seed(7, r),
            data=data,
        )
        for r in range(world)
    ]
    log_w = torch.cat([p.info["log_weights"] for p in parts])
    assert torch.equal(r0["log_weights"], log_w)
    summary = weight_summary(log_w)
    assert r0["value"] == pytest.approx(summary["estimate"] + parts[0].info["log_z0"], rel=1e-12, abs=1e-12)
    assert r0["stderr"] == pytest.approx(summary["stderr"], rel=1e-12, abs=1e-15)


@pytest.mark.filterwarnings("ignore:Chains not mixed")  # a few steps suffice to compare the runs
def test_sample_splits_chains_across_ranks_and_gathers_them(launched):
    from distributed_worker import small_problem

    results = finished(launched)
    world, r0 = len(results), results[0]
    assert r0["draws"].shape == (6, 5, 6)
    for r in results[1:]:
        for key in ("draws", "energy", "last"):
            assert torch.equal(r0[key], r[key])
    # one process: each rank's chains (5 over 2 ranks: 3 + 2; over 3: 2 + 2 + 1) from its shard seed
    model, _ = small_problem()
    model.load_state_dict(r0["trained"])
    parts = [
        ebm.sample(
            model,
            ebm.Gibbs(),
            n_chains=distributed.local_count(5, r, world),
            n_steps=6,
            seed=distributed.shard_seed(11, r),
            progress=False,
        )
        for r in range(world)
    ]
    assert torch.equal(r0["draws"], torch.cat([p["v"] for p in parts], dim=1))
    assert torch.equal(r0["energy"], torch.cat([p.energy for p in parts], dim=1))
    assert torch.equal(r0["last"], torch.cat([p.last["v"] for p in parts]))


def test_resumed_two_rank_run_equals_the_uninterrupted_one(two_ranks):
    r0, r1 = finished(two_ranks)
    for r in (r0, r1):
        assert torch.equal(r["resume"]["straight"], r["resume"]["resumed"])
        straight, resumed = r["resume"]["losses"]
        assert straight == resumed
    assert torch.equal(r0["resume"]["resumed"], r1["resume"]["resumed"])


def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step_with_a_last_checkpoint(launched):
    results = finished(launched)
    world = len(results)
    # 2 ranks: SIGTERM to rank 1 at step 6 (epoch 2, batch 2); 3 ranks: SIGINT to rank 2 at
    # step 4 (the end of epoch 1); the checkpoint is otherwise written at epoch ends only
    step, signum, where = {2: (6, signal.SIGTERM, "epoch 2, batch 2"), 3: (4, signal.SIGINT, "end of epoch 1")}[world]
    for r in results:
        stopped = r["signalled"]
        assert stopped["stopped_at"] == step
        assert stopped["stop"] is not None and stopped["stop"]["signal"] == signum
        assert f"training stopped by {signal.Signals(signum).name}: a checkpoint was written" in stopped["stop"]["message"]
        # resumed from that checkpoint, every rank ends where the uninterrupted run did
        assert torch.equal(stopped["resumed"], results[0]["steps"][-1])
        assert stopped["losses"] == results[0]["loss"]
    assert f"({where})" in results[0]["signalled"]["stop"]["message"]


def permutation_test(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """The exact two-sided permutation test of equal means of ``a`` and ``b``: returns the
    p-value (the fraction of all splits of the pooled values into groups of their sizes whose
    difference of means is at least the observed one in magnitude) and the tolerance (the
    difference of means that the ``ALPHA`` level allows: beyond it, p <= ALPHA)."""
    pooled = torch.cat([a, b]).double()
    splits = torch.tensor(list(itertools.combinations(range(len(pooled)), len(a))))
    sums = pooled[splits].sum(1)
    differences = (sums / len(a) - (pooled.sum() - sums) / len(b)).abs()
    observed = (a.double().mean() - b.double().mean()).abs()
    p = (differences >= observed * (1 - 1e-12)).double().mean().item()
    tolerance = differences.sort(descending=True).values[int(ALPHA * len(differences))].item()
    return p, tolerance


def test_two_ranks_reach_the_digits_log_likelihood_of_one_process(two_ranks):
    """Same global batch, chains and lr (SGD, where a wrongly scaled gradient shows): the
    exact mean log-likelihood after training over 8 seeds on 2 ranks against 8 seeds on one
    process; the tolerance is the permutation distribution's, from the spread over seeds."""
    from distributed_worker import DIGITS_SEEDS, digits_log_likelihoods

    two = finished(two_ranks)[0]["digits"]
    one = digits_log_likelihoods(DIGITS_SEEDS[1])
    p, tolerance = permutation_test(two, one)
    difference = (two.mean() - one.mean()).item()
    assert p > ALPHA, (
        f"2 ranks {two.mean():.4f} against one process {one.mean():.4f} nats: the difference {difference:.4f} "
        f"exceeds the tolerance {tolerance:.4f} (p = {p:.2g})"
    )


def test_a_two_rank_checkpoint_resumes_only_on_two_ranks(two_ranks):
    from distributed_worker import small_problem

    _, out = two_ranks
    model, data = small_problem()
    with pytest.raises(ValueError, match="written by 2 processes, not 1"):
        ebm.fit(model, data, epochs=2, batch_size=16, n_chains=10, lr=0.05, seed=3, resume=out / "stopped.pt")


def test_a_dead_rank_stops_the_others_with_an_error_within_the_timeout(launched):
    results = finished(launched)
    world = len(results)
    assert "error" not in results[-1]  # the rank that died
    for rank, r in enumerate(results[:-1]):
        assert f"rank {rank} of {world}" in r["error"] and "another rank probably died" in r["error"]
        assert r["seconds_to_error"] < COLLECTIVE_SECONDS


def test_collectives_use_the_device_of_the_backend(monkeypatch):
    assert distributed.collective_device("gloo") == torch.device("cpu")
    assert distributed.collective_device("cpu:gloo,cuda:nccl") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    # NCCL reduces GPU tensors only: the rank's current device (set by init from LOCAL_RANK)
    assert distributed.collective_device("nccl") == torch.device("cuda", 1)
    assert distributed.collective_device() == torch.device("cpu")  # no process group


def test_without_a_process_group_nothing_changes():
    assert distributed.world() == (0, 1)
    assert distributed.local_count(10) == 10
    assert distributed.shard_seed(4, 0) == 4
    x = torch.arange(3.0)
    assert distributed.mean_over_ranks(x) is x and distributed.gather_rows(x) is x
    assert distributed.max_over_ranks([True, 15]) == [1, 15]
    assert distributed.any_rank(False) is False


@pytest.mark.slow
def test_cli_trains_under_torchrun_variables(tmp_path):
    """``torchrun --nproc-per-node=2 -m ebm train ...``: rank 0 alone prints and writes."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "ebm", "train", "--dataset", "digits", "--epochs", "1", "--out", str(out)]
    _, codes, logs = launch("cli", tmp_path, command=command)
    assert codes == [0, 0], logs
    assert "epoch 1/1" in logs[0] and logs[1] == ""
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "history.json", "model.pt", "run.json"]


def test_cli_nproc_launches_torchrun_once(monkeypatch, capsys):
    from ebm import cli

    launched = []
    monkeypatch.setattr(cli, "launch_torchrun", lambda nproc, argv: launched.append((nproc, argv)) or 0)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    argv = ["train", "--nproc", "2", "--epochs", "1"]
    assert cli.main(argv) == 0 and launched == [(2, argv)]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "ebm"]
    for given in (["--nproc", "2"], ["--nproc=2"], ["--npr", "2"]):
        assert cli.torchrun_command(2, ["train", *given, "--epochs", "1"]) == [*torchrun, "train", "--epochs", "1"]
    # under torchrun (which sets LOCAL_WORLD_SIZE) --nproc must say what torchrun started
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    assert cli.main(argv) == 1 and len(launched) == 1
    assert "--nproc 2, but torchrun started 3 processes per node" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_nproc_trains_on_two_processes(tmp_path):
    """``ebm train --nproc 2``: torchrun launched by the command; rank 0 alone prints and writes."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "ebm", "train", "--nproc", "2", "--dataset", "digits", "--epochs", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(ebm.__file__).parents[1]))
    done = subprocess.run([*command, "--out", str(out)], env=env, capture_output=True, text=True, timeout=LAUNCH_SECONDS)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("epoch 1/1") == 1
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "history.json", "model.pt", "run.json"]
    # the checkpoint holds the chains of both ranks
    assert len(torch.load(out / "checkpoint.pt", weights_only=False)["ranks"]) == 2


@pytest.mark.slow
def test_cli_nproc_sigterm_stops_both_ranks_with_a_checkpoint(tmp_path):
    """SIGTERM to ``ebm train --nproc 2`` reaches both ranks through torchrun: they write a
    last checkpoint together and the command exits with 128 + 15."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "ebm", "train", "--nproc", "2", "--epochs", "300", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(ebm.__file__).parents[1]))
    run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + LAUNCH_SECONDS
        while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.2)
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=LAUNCH_SECONDS)
    finally:
        run.kill()
    assert run.returncode == 128 + signal.SIGTERM, err
    assert err.count("training stopped by SIGTERM: a checkpoint was written") == 2, err
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert len(state["ranks"]) == 2 and state["epoch"] < 300
