"""Checkpoints and model files: nothing executed, corruption detected, clear errors, exact resume."""

import dataclasses
import os
import pickle
import sys
import zipfile

import numpy as np
import pytest
import torch
from test_training import Interrupt, InterruptAt

import ebm
from ebm.datasets import bars_and_stripes, digits
from ebm.samplers.base import SamplerState
from ebm.serialization import UnsafeFileError, from_plain, register_safe_class, seal, to_plain
from ebm.training import PersistentChains

pytestmark = pytest.mark.usefixtures("one_thread")


class Payload:
    """Pickles to a call of os.system: what a crafted checkpoint would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text, text
    return text


def real_data(n=24, seed=0):
    return {"v": torch.randn(n, 2, generator=torch.Generator().manual_seed(seed)) * 0.7}


def interrupted_then_resumed(tmp_path, make_model, data, **options):
    """(the model trained without interruption, the model interrupted in epoch 3 and resumed)."""
    whole = make_model(0)
    expected = ebm.fit(whole, data, **options)
    path = tmp_path / "ckpt.pt"
    with pytest.raises(Interrupt):
        ebm.fit(make_model(0), data, checkpoint=path, callbacks=[InterruptAt(3, 2)], **options)
    resumed = make_model(1)  # a different start: everything must come from the checkpoint
    history = ebm.fit(resumed, data, checkpoint=path, resume=path, **options)
    assert [{k: v for k, v in e.items() if k != "time"} for e in history] == [
        {k: v for k, v in e.items() if k != "time"} for e in expected
    ]
    return whole, resumed


def assert_same_parameters(a, b):
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name


# ---------------------------------------------------------------------- exact resume through plain data
@pytest.mark.parametrize(
    "sampler",
    [
        pytest.param(lambda: ebm.Composite({("h",): ebm.Gibbs(), ("v",): ebm.HMC(0.1, n_leapfrog=3)}), id="hmc"),
        pytest.param(lambda: ebm.Composite({("h",): ebm.Gibbs(), ("v",): ebm.Langevin(0.1)}), id="langevin"),
    ],
)
def test_pcd_with_gradient_samplers_resumes_exactly(tmp_path, sampler):
    # burn_in leaves the adapted step size and mass in the persistent sampler state
    options = dict(
        method=PersistentChains(k=2, n_chains=6, burn_in=5), sampler=sampler(), epochs=4, batch_size=8,
        lr=0.02, seed=3, metrics=None,
    )  # fmt: skip
    whole, resumed = interrupted_then_resumed(tmp_path, lambda s: ebm.GaussianRBM(2, 3, seed=s), real_data(), **options)
    assert_same_parameters(whole, resumed)


def test_pcd_with_parallel_tempering_resumes_exactly(tmp_path):
    options = dict(
        sampler=ebm.ParallelTempering(ebm.Gibbs(), 3), k=2, epochs=4, batch_size=4, n_chains=5, lr=0.05, seed=3,
        metrics=None,
    )  # fmt: skip
    whole, resumed = interrupted_then_resumed(
        tmp_path, lambda s: ebm.RBM(9, 4, seed=s), {"v": bars_and_stripes(3)}, **options
    )
    assert_same_parameters(whole, resumed)


def test_adapting_sampler_state_round_trips_with_its_warmup_accumulators():
    model = ebm.GaussianRBM(2, 3, seed=0)
    sampler = ebm.Composite({("h",): ebm.Gibbs(), ("v",): ebm.HMC(0.1, n_leapfrog=3)})
    g = torch.Generator().manual_seed(0)
    state = sampler.init(model, model.random_state(4, g), (), g)
    state = sampler.start_adaptation(model, state, 200)
    for _ in range(3):
        state, _ = sampler.step(model, state, g, True)
    plain = to_plain(state)
    # the warm-up state holds Pyro's DualAveraging and ebm's Welford accumulators: stored as plain data
    kinds = str(plain)
    assert "DualAveraging" in kinds and "adaptation:Welford" in kinds
    copy = from_plain(plain)
    g_copy = torch.Generator().set_state(g.get_state())
    for _ in range(3):
        state, _ = sampler.step(model, state, g, True)
        copy, _ = sampler.step(model, copy, g_copy, True)
    for name in state.state:
        assert torch.equal(state.state[name], copy.state[name]), name


def test_metrics_a_callback_adds_as_numpy_numbers_are_checkpointed_as_numbers(tmp_path):
    class NumpyMetric:
        def on_epoch_end(self, trainer, epoch, metrics):
            metrics["numpy"] = np.float32(0.5) * epoch
            metrics["count"] = np.int64(epoch)

    data, path = {"v": bars_and_stripes(3)}, tmp_path / "ckpt.pt"
    options = dict(batch_size=8, metrics=None, checkpoint=path, callbacks=[NumpyMetric()])
    ebm.fit(ebm.RBM(9, 2), data, epochs=1, **options)
    history = ebm.fit(ebm.RBM(9, 2), data, epochs=2, resume=path, **options)
    assert history["numpy"] == [0.5, 1.0] and history["count"] == [1, 2]
    assert type(history[0]["numpy"]) is float and type(history[0]["count"]) is int


def test_plain_data_keeps_containers_and_refuses_foreign_objects():
    value = {
        "t": (1, 2.5, "x"),
        "f": frozenset({"a", "b"}),
        3: torch.Size([2, 3]),
        "g": torch.Generator().manual_seed(5),
        "s": SamplerState({"v": torch.ones(2)}, frozenset()),
    }
    back = from_plain(to_plain(value))
    assert back["t"] == (1, 2.5, "x") and back["f"] == frozenset({"a", "b"}) and back[3] == torch.Size([2, 3])
    assert torch.equal(back["g"].get_state(), value["g"].get_state())
    assert isinstance(back["s"], SamplerState) and back["s"].observed == frozenset()
    with pytest.raises(TypeError, match=r"cannot store .*Payload at state\.x\[0\]"):
        to_plain({"x": [Payload("nowhere")]})
    crafted = to_plain(SamplerState({}, frozenset()))
    crafted["fields"]["__class__"] = "anything"
    with pytest.raises(UnsafeFileError, match=r"sets \['__class__'\], which are not fields"):
        from_plain(crafted)


@dataclasses.dataclass
class UserState:
    """The state of a user's own sampler."""

    position: torch.Tensor
    steps: int = 0


def test_user_dataclasses_round_trip_only_once_registered():
    state = UserState(torch.arange(3.0), 2)
    with pytest.raises(TypeError, match=r"allow it with ebm\.serialization\.register_safe_class"):
        to_plain(state)
    register_safe_class(UserState)
    back = from_plain(to_plain(state))
    assert isinstance(back, UserState) and back.steps == 2 and torch.equal(back.position, state.position)


def test_nuts_state_is_refused_before_training_starts(tmp_path):
    sampler = ebm.Composite({("h",): ebm.Gibbs(), ("v",): ebm.NUTS(warmup_steps=2)})
    done = []

    class Count:
        def on_batch_end(self, trainer, batch, negatives):
            done.append(1)

    with pytest.raises(TypeError, match="NUTS's state, cannot be stored") as error:
        ebm.fit(
            ebm.GaussianRBM(2, 2), real_data(8), sampler=sampler, n_chains=2, epochs=1, batch_size=8,
            metrics=None, checkpoint=tmp_path / "c.pt", free_energy_negatives=False, callbacks=[Count()],
        )  # fmt: skip
    one_line(error)
    assert done == []


# ---------------------------------------------------------------------- nothing executed
@pytest.mark.parametrize(
    ("write", "message"),
    [
        (torch.save, r"checkpoint\.pt holds Python objects .*GLOBAL .*system.*could run code"),
        (lambda obj, path: path.write_bytes(pickle.dumps(obj)), r"checkpoint\.pt is not a .*not a torch\.save archive"),
    ],
    ids=["torch.save", "raw pickle"],
)
def test_malicious_checkpoint_does_not_run_and_is_refused(tmp_path, write, message):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    write({"ebm_checkpoint": 2, "model": Payload(marker)}, path)
    for load in (ebm.load, lambda p: ebm.fit(ebm.RBM(9, 2), {"v": bars_and_stripes(3)}, epochs=1, resume=p)):
        with pytest.raises(ValueError, match=message) as error:
            load(path)
        one_line(error)
    assert not marker.exists()


def test_checkpoint_naming_a_foreign_class_is_refused(tmp_path):
    data = {"v": bars_and_stripes(3)}
    path = tmp_path / "ckpt.pt"
    ebm.fit(ebm.RBM(9, 2), data, epochs=1, batch_size=7, metrics=None, checkpoint=path)
    state = torch.load(path, weights_only=True)
    state["negatives"]["sampler_state"]["class"] = "subprocess:Popen"
    state.pop("sha256")
    torch.save(state, path)
    with pytest.raises(UnsafeFileError, match="asks for subprocess:Popen: ebm restores only its own dataclasses"):
        ebm.fit(ebm.RBM(9, 2), data, epochs=2, batch_size=7, metrics=None, resume=path)


def test_model_file_naming_a_callable_that_is_not_a_model_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    record = {"class": "subprocess:run", "config": {"args": ["touch", str(marker)]}, "state_dict": {}}
    torch.save({"ebm_model": record}, path)
    with pytest.raises(UnsafeFileError, match="not an ebm EnergyModel class"):
        ebm.load(path)
    assert not marker.exists()


def test_model_class_from_a_script_main_gives_a_clear_error(tmp_path):
    class ScriptModel(ebm.EnergyModel):
        def __init__(self, n=2):
            super().__init__(x=ebm.Real(n))

        def energy(self, state):
            return state["x"].pow(2).sum(-1)

    ScriptModel.__module__, ScriptModel.__qualname__ = "__main__", "ScriptModel"
    ScriptModel(2).save(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="defined in a script's __main__; define it in an importable module") as e:
        ebm.load(tmp_path / "m.pt")
    one_line(e)
    ScriptModel.__module__ = "my_models_not_installed"
    ScriptModel(2).save(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="module 'my_models_not_installed', which cannot be imported here") as e:
        ebm.load(tmp_path / "m.pt")
    one_line(e)


# ---------------------------------------------------------------------- corrupted, truncated, foreign files
def flip_tensor_bytes(path, n=8):
    """Flip ``n`` bytes in the middle of the largest tensor payload of a torch zip file."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        assert info.compress_type == zipfile.ZIP_STORED
    raw = bytearray(path.read_bytes())
    # the payload follows the local header: 30 bytes, the name and the extra field
    name_len, extra_len = (
        int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little"),
        int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little"),
    )
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2 - n // 2
    for i in range(start, start + n):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_model_file_with_flipped_bytes_is_rejected(tmp_path):
    path = tmp_path / "m.pt"
    ebm.RBM(64, 16, seed=0).save(path)
    flip_tensor_bytes(path)
    with pytest.raises(ValueError, match=r"m\.pt is corrupted: its checksum does not match") as error:
        ebm.load(path)
    one_line(error)


def test_checkpoint_with_flipped_bytes_is_rejected(tmp_path):
    data = {"v": bars_and_stripes(3)}
    path = tmp_path / "ckpt.pt"
    ebm.fit(ebm.RBM(9, 4), data, epochs=1, batch_size=7, metrics=None, checkpoint=path)
    flip_tensor_bytes(path)
    with pytest.raises(ValueError, match=r"ckpt\.pt is corrupted"):
        ebm.fit(ebm.RBM(9, 4), data, epochs=2, batch_size=7, metrics=None, resume=path)


def test_model_file_without_checksum_still_loads(tmp_path):
    # files written before checksums were stored
    model = ebm.RBM(6, 3, seed=2)
    path = tmp_path / "old.pt"
    from ebm.io import model_record

    torch.save({"ebm_model": model_record(model)}, path)
    assert_same_parameters(ebm.load(path), model)


def test_old_checkpoint_format_is_refused_clearly(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"ebm_checkpoint": 1, "epoch": 3}, path)
    with pytest.raises(ValueError, match="format 1; this version of ebm resumes only format 2"):
        ebm.fit(ebm.RBM(9, 2), {"v": bars_and_stripes(3)}, epochs=4, resume=path)


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "other-torch", "directory"])
def test_unreadable_files_give_one_line_naming_the_file(tmp_path, kind):
    path = tmp_path / "file.pt"
    good = tmp_path / "good.pt"
    ebm.RBM(9, 4).save(good)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:700])
    elif kind == "text":
        path.write_text("hello\n" * 50)
    elif kind == "other-torch":
        torch.save([1, 2, 3], path)
    else:
        path.mkdir()
    for load in (ebm.load, lambda p: ebm.fit(ebm.RBM(9, 4), {"v": bars_and_stripes(3)}, epochs=1, resume=p)):
        with pytest.raises(ValueError) as error:
            load(path)
        assert str(path) in one_line(error)


def test_stale_temporary_checkpoint_is_removed_on_the_next_start(tmp_path):
    path = tmp_path / "ckpt.pt"
    stale = tmp_path / "ckpt.pt.k3j2_x.tmp"
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / "notes.tmp"
    other.write_text("not ours")
    ebm.fit(ebm.RBM(9, 2), {"v": bars_and_stripes(3)}, epochs=1, batch_size=7, metrics=None, checkpoint=path)
    assert not stale.exists() and other.exists() and path.is_file()


# ---------------------------------------------------------------------- resume semantics
def test_resuming_with_more_epochs_continues_the_linear_decay_over_the_new_total(tmp_path):
    data = {"v": bars_and_stripes(3)}
    path = tmp_path / "ckpt.pt"
    options = dict(batch_size=8, lr=0.04, metrics=None, checkpoint=path)
    ebm.fit(ebm.RBM(9, 4), data, epochs=4, **options)
    lrs = {}

    class LearningRates:
        def on_batch_end(self, trainer, batch, negatives):
            lrs.setdefault(trainer.epoch + 1, trainer.optimizer.param_groups[0]["lr"])

    ebm.fit(ebm.RBM(9, 4), data, epochs=6, resume=path, callbacks=[LearningRates()], **options)
    # the schedule is re-planned over 6 epochs: epoch 5 steps at lr (1 - 4/6), not at 0
    assert lrs == pytest.approx({5: 0.04 * (1 - 4 / 6), 6: 0.04 * (1 - 5 / 6)})


class StopAfter:
    """Stops training at the end of epoch ``epoch`` (as early stopping would)."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, trainer, epoch, metrics):
        trainer.stop_training = epoch == self.epoch


@pytest.mark.parametrize("first", ["2 of 2", "2 of 4, stopped"])
@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_a_second_fit_continues_as_a_resume_from_the_first(tmp_path, schedule, first):
    """A first fit that ends after epoch 2 (its total, or stopped early), then fit(epochs=4)
    on the same trainer, ends bit for bit as a fresh trainer resumed with epochs=4 from the
    checkpoint the first fit wrote: the second fit neither re-initialises the visible biases
    nor the chains, and carries the schedule on (re-planned when the total changed)."""
    data = {"v": digits()[0][:40]}
    options = dict(batch_size=8, n_chains=12, metrics=None, schedule=schedule, progress=False, callbacks=[StopAfter(2)])
    path, kept = tmp_path / "ckpt.pt", tmp_path / "after-2.pt"
    trainer = ebm.Trainer(ebm.RBM(64, 6, seed=1), checkpoint=path, **options)
    trainer.fit(data, epochs=2 if first == "2 of 2" else 4)
    assert trainer.epoch == 2
    kept.write_bytes(path.read_bytes())
    trainer.fit(data, epochs=4)
    resumed = ebm.Trainer(ebm.RBM(64, 6, seed=1), **options)
    resumed.fit(data, epochs=4, resume=kept)
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[name], value), name
    assert [e["loss"] for e in trainer.history] == [e["loss"] for e in resumed.history]
    assert trainer.optimizer.param_groups[0]["lr"] == resumed.optimizer.param_groups[0]["lr"]


def test_resuming_with_another_lr_or_optimizer_is_refused(tmp_path):
    data = {"v": bars_and_stripes(3)}
    path = tmp_path / "ckpt.pt"
    ebm.fit(ebm.RBM(9, 4), data, epochs=1, batch_size=8, metrics=None, checkpoint=path)
    with pytest.raises(ValueError, match=r"trained with lr=0\.03, not 0\.5: resume with the same lr"):
        ebm.fit(ebm.RBM(9, 4), data, epochs=2, batch_size=8, lr=0.5, metrics=None, resume=path)
    with pytest.raises(ValueError, match="trained with the Adam optimizer, not SGD: resume with the same optimizer"):
        ebm.fit(ebm.RBM(9, 4), data, epochs=2, batch_size=8, optimizer="sgd", metrics=None, resume=path)


# ---------------------------------------------------------------------- runaway training and bad samplers
class LearningRateFrom:
    """Sets the learning rate to ``lr`` from epoch ``epoch + 1`` on: a finite runaway."""

    def __init__(self, epoch, lr):
        self.epoch, self.lr = epoch, lr

    def on_epoch_end(self, trainer, epoch, metrics):
        if epoch == self.epoch:
            trainer.optimizer.param_groups[0]["lr"] = self.lr


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_runaway_parameters_stop_training_with_the_epoch_and_batch(tmp_path, optimizer):
    path = tmp_path / "ckpt.pt"
    with pytest.raises(ebm.training.TrainingDiverged, match=r"epoch 3, batch 1: the parameters ran away .*epoch 2"):
        ebm.fit(
            ebm.RBM(9, 4), {"v": bars_and_stripes(3)}, epochs=5, batch_size=5, optimizer=optimizer, checkpoint=path,
            metrics=None, callbacks=[LearningRateFrom(2, 1e6)],
        )  # fmt: skip
    kept = torch.load(path, weights_only=True)
    assert kept["epoch"] == 2
    assert max(p.abs().max() for p in kept["model"]["state_dict"].values()) < 100


class NegativeWeightAt:
    """Sets one weight to ``value`` at the end of epoch ``epoch``."""

    def __init__(self, epoch, value):
        self.epoch, self.value = epoch, value

    def on_epoch_end(self, trainer, epoch, metrics):
        if epoch == self.epoch:
            with torch.no_grad():
                trainer.model.W[5, 3] = self.value


@pytest.mark.parametrize("n_hidden", [4, 80])  # W below and above the size measured by amax/amin
def test_runaway_check_sees_a_large_negative_parameter(n_hidden):
    data = {"v": bars_and_stripes(3).repeat(1, 9)}
    with pytest.raises(ebm.training.TrainingDiverged, match=r"epoch 2, batch 1: the parameters ran away to 1e\+06"):
        ebm.fit(
            ebm.RBM(81, n_hidden), data, epochs=2, batch_size=16, lr=1e-9, metrics=None,
            callbacks=[NegativeWeightAt(1, -1e6)],
        )  # fmt: skip


def test_sampler_class_instead_of_instance_is_a_clear_type_error():
    with pytest.raises(TypeError, match=r"sampler must be a sampler instance, e\.g\. ebm\.Gibbs\(\), not the class"):
        ebm.fit(ebm.RBM(9, 2), {"v": bars_and_stripes(3)}, sampler=ebm.Gibbs, epochs=1)


def test_runaway_check_can_be_disabled_and_is_validated():
    data = {"v": bars_and_stripes(3)}
    options = dict(epochs=1, batch_size=4, lr=1e6, metrics=None)
    with pytest.raises(ebm.training.TrainingDiverged, match="epoch 1, batch 1: the parameters ran away"):
        ebm.fit(ebm.RBM(9, 4), data, **options)
    ebm.fit(ebm.RBM(9, 4), data, runaway_factor=None, **options)
    with pytest.raises(ValueError, match="runaway_factor must be a number > 1 or None"):
        ebm.fit(ebm.RBM(9, 4), data, runaway_factor=0.5, **options)


def test_a_file_naming_a_program_entry_module_is_refused_without_importing_it(tmp_path, monkeypatch):
    # importing ebm.__main__ (or any pkg.__main__) would run that program: never import it from a file
    path = tmp_path / "model.pt"
    ebm.RBM(4, 2, seed=0).save(path)
    record = torch.load(path, weights_only=True)
    record["ebm_model"]["class"] = "ebm.__main__:RBM"
    record = seal({k: v for k, v in record.items() if k != "sha256"})
    torch.save(record, path)
    monkeypatch.setattr(sys, "argv", ["ebm", "--help"])
    with pytest.raises(UnsafeFileError, match="entry module"):
        ebm.load(path)
