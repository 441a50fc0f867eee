"""The rough edges a new user hit (issue 15): each test reproduces one report."""

import math
import warnings

import numpy as np
import pytest
import torch

import ebm
from ebm import cli
from ebm.datasets import bars_and_stripes
from ebm.devices import available_devices
from ebm.evaluation.pseudo import pseudo_log_likelihood
from ebm.training import TrainingDiverged

pytestmark = pytest.mark.usefixtures("one_thread")

# a device that does not exist on any machine: CUDA where there is none, else a 100th GPU
MISSING_DEVICE = "cuda:99" if torch.cuda.is_available() else "cuda"


def binary(n=40, d=6, seed=0):
    return (torch.rand(n, d, generator=torch.Generator().manual_seed(seed)) < 0.3).float()


# ---------------------------------------------------------------------- ebm.load on a checkpoint
def test_load_on_a_checkpoint_says_what_the_file_is(tmp_path):
    path = tmp_path / "checkpoint.pt"
    ebm.fit(ebm.RBM(6, 3), {"v": binary()}, epochs=1, batch_size=10, checkpoint=path, progress=False)
    with pytest.raises(ValueError, match=r"is a training checkpoint, not a model file: .*resume=") as info:
        ebm.load(path)
    assert "\n" not in str(info.value)
    model = tmp_path / "model.pt"
    ebm.RBM(6, 3).save(model)
    with pytest.raises(ValueError, match="is a model file, not a training checkpoint"):
        ebm.fit(ebm.RBM(6, 3), {"v": binary()}, epochs=1, batch_size=10, resume=model, progress=False)


# ---------------------------------------------------------------------- devices
def test_a_missing_device_names_those_available(tmp_path, capsys):
    listed = f"available here: {', '.join(available_devices())}"
    with pytest.raises(ValueError, match=f"device '{MISSING_DEVICE}' is not available.*{listed}"):
        ebm.RBM(6, 3).to(MISSING_DEVICE)
    with pytest.raises(ValueError, match=listed):
        ebm.RBM(6, 3).to(device=torch.device(MISSING_DEVICE))
    with pytest.raises(ValueError, match=listed):
        ebm.RBM(6, 3).cuda(99)
    path = tmp_path / "model.pt"
    ebm.RBM(6, 3).save(path)
    with pytest.raises(ValueError, match=f"map_location: device '{MISSING_DEVICE}' is not available"):
        ebm.load(path, map_location=MISSING_DEVICE)
    assert cli.main(["sample", str(path), "--device", MISSING_DEVICE]) == 1
    assert listed in capsys.readouterr().err
    assert ebm.RBM(6, 3).to("cpu").device == torch.device("cpu")


# ---------------------------------------------------------------------- NaN energies in training
class NaNAbove(ebm.EnergyModel):
    """An RBM energy that is NaN for states with more than 4 visible units on."""

    def __init__(self, n=6):
        super().__init__(v=ebm.Binary(n), h=ebm.Binary(3))
        self.W = torch.nn.Parameter(0.1 * torch.randn(n, 3, generator=torch.Generator().manual_seed(0)))

    def energy(self, state):
        e = -((state["v"] @ self.W) * state["h"]).sum(-1)
        return torch.where(state["v"].sum(-1) > 4, torch.nan, e)


def test_nan_energies_in_training_raise_naming_the_phase_blocks_and_step():
    with pytest.raises(TrainingDiverged) as info:
        ebm.fit(NaNAbove(), {"v": binary()}, epochs=3, batch_size=10, progress=False)
    message = str(info.value)
    assert "epoch 1, batch 1" in message
    assert "NaNAbove's energy is NaN or inf at" in message and "persistent chains (model phase), blocks 'v', 'h'" in message
    assert "finite parameters (fix the energy for those states)" in message


# ---------------------------------------------------------------------- NumPy and lossless dtypes
@pytest.mark.parametrize(
    "convert",
    [
        lambda x: x.numpy(),
        lambda x: x.numpy().astype(np.float64),
        lambda x: x.numpy().astype(bool),
        lambda x: x.numpy().astype(np.int32),
        lambda x: x.bool(),
        lambda x: x.long(),
        lambda x: x.double(),
    ],
    ids=["numpy", "numpy-float64", "numpy-bool", "numpy-int32", "bool", "int64", "float64"],
)
@pytest.mark.filterwarnings("ignore:Chains not mixed")  # a few steps suffice to compare the runs
def test_numpy_and_lossless_dtypes_are_accepted_at_the_edges(convert):
    x = binary()
    given = convert(x)
    options = dict(epochs=2, batch_size=10, progress=False, seed=1)
    expected, model = ebm.RBM(6, 3, seed=0), ebm.RBM(6, 3, seed=0)
    want = ebm.fit(expected, {"v": x}, validation={"v": x}, **options)
    got = ebm.fit(model, {"v": given}, validation={"v": convert(x)}, **options)
    assert [e["loss"] for e in got] == [e["loss"] for e in want]
    assert torch.equal(model.W, expected.W)
    assert torch.equal(ebm.log_likelihood(model, {"v": given}), ebm.log_likelihood(model, {"v": x}))
    pll = pseudo_log_likelihood
    assert torch.equal(pll(model, {"v": given}), pll(model, {"v": x}))
    ais = dict(method="ais", n_betas=20, n_runs=4, seed=0)
    assert float(ebm.log_partition(model, data={"v": given}, **ais)) == float(ebm.log_partition(model, data={"v": x}, **ais))
    clamped = ebm.sample(model, ebm.Gibbs(), observed={"v": given}, n_steps=4, seed=0)
    assert torch.equal(clamped["h"], ebm.sample(model, ebm.Gibbs(), observed={"v": x}, n_steps=4, seed=0)["h"])
    started = ebm.sample(model, ebm.Gibbs(), init={"v": given}, n_steps=4, seed=0)
    assert torch.equal(started["v"], ebm.sample(model, ebm.Gibbs(), init={"v": x}, n_steps=4, seed=0)["v"])


def test_lossy_or_out_of_support_data_is_still_refused():
    rbm = ebm.RBM(6, 3)
    with pytest.raises(TypeError, match=r"'v' has torch.float64 values that torch.float32 cannot hold exactly"):
        ebm.fit(rbm, {"v": torch.full((4, 6), 0.1, dtype=torch.float64)}, epochs=1)
    with pytest.raises(TypeError, match=r"'v' has torch.int64 values that torch.float32 cannot hold exactly"):
        ebm.log_likelihood(rbm, {"v": torch.full((4, 6), 2**24 + 1)})
    with pytest.raises(ValueError, match="takes only the values"):
        ebm.fit(rbm, {"v": np.full((4, 6), 2)}, epochs=1)
    with pytest.raises(TypeError, match="NumPy array of <U1"):
        ebm.sample(rbm, ebm.Gibbs(), observed={"v": np.full((4, 6), "a")})


# ---------------------------------------------------------------------- evaluation cost
def test_metrics_on_a_fixed_subsample_as_often_as_asked():
    data = {"v": bars_and_stripes(4)}  # 30 rows
    trainer = ebm.Trainer(ebm.RBM(16, 4, seed=0), batch_size=10, evaluate_rows=12, evaluate_every=2, progress=False)
    history = trainer.fit(data, epochs=5)
    assert [("log_likelihood" in e) for e in history] == [False, True, False, True, True]  # and always the last
    assert "loss" in history[0]
    assert trainer.evaluation == "metrics on 12 of 30 training rows, every 2 epochs"
    # the same 12 rows each time, drawn from the seed alone
    picked = torch.randperm(30, generator=torch.Generator().manual_seed(0))[:12].sort().values
    expected = ebm.log_likelihood(trainer.model, {"v": data["v"][picked]}).mean().item()
    assert math.isclose(history[-1]["log_likelihood"], expected, rel_tol=1e-6)


def test_auto_evaluation_keeps_cheap_metrics_every_epoch():
    trainer = ebm.Trainer(ebm.RBM(16, 4, seed=0), batch_size=10, progress=False)
    history = trainer.fit({"v": bars_and_stripes(4)}, epochs=3)
    assert all("log_likelihood" in e for e in history)
    assert trainer.evaluation == "metrics on all 30 training rows, every epoch"


# ---------------------------------------------------------------------- silent settings
def test_batch_size_above_the_data_warns():
    with pytest.warns(
        UserWarning, match="batch_size=50 is larger than the 40 rows of data: each epoch is one optimizer step"
    ):
        ebm.fit(ebm.RBM(6, 3), {"v": binary()}, epochs=1, batch_size=50, progress=False)


def test_fewer_steps_than_thin_warns_and_a_long_burn_in_does_not():
    rbm = ebm.RBM(6, 3)
    with pytest.warns(UserWarning, match="n_steps=5 with thin=10 records no draws"):
        ebm.sample(rbm, ebm.Gibbs(), n_chains=4, n_steps=5, thin=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        chains = ebm.sample(rbm, ebm.Gibbs(), n_chains=4, n_steps=1, burn_in=50)
    assert chains.n_draws == 1
