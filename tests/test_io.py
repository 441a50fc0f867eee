"""Saving and loading models: ``model.save(path)`` / ``ebm.load(path)`` round trips."""

import pytest
import torch
from torch import nn

import ebm
from ebm.datasets import bars_and_stripes
from ebm.io import atomic_save


class Ising(ebm.EnergyModel):
    """A user subclass with a trainable coupling and keyword configuration."""

    def __init__(self, L, beta=0.4, periodic=True):
        super().__init__(s=ebm.Spin(L, L))
        self.periodic = periodic
        self.beta = nn.Parameter(torch.tensor(float(beta)))

    def energy(self, state):
        s = state["s"]
        return -self.beta * (s * s.roll(1, -1) + s * s.roll(1, -2)).sum((-2, -1))


class WideRBM(ebm.RBM):
    """A subclass of a subclass: the outermost constructor's arguments are recorded."""

    def __init__(self, n_visible, factor=2, **kwargs):
        super().__init__(n_visible, factor * n_visible, **kwargs)
        self.factor = factor


def assert_same_parameters(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_rbm_round_trip_records_config(tmp_path):
    rbm = ebm.RBM(6, 3, init_std=0.3, seed=4)
    with torch.no_grad():
        rbm.a.uniform_(-1, 1)
        rbm.b.uniform_(-1, 1)
    rbm.save(tmp_path / "rbm.pt")
    loaded = ebm.load(tmp_path / "rbm.pt")
    assert type(loaded) is ebm.RBM
    assert loaded.config == {"n_visible": 6, "n_hidden": 3, "init_std": 0.3, "seed": 4}
    assert_same_parameters(rbm, loaded)
    v = torch.randint(0, 2, (5, 6)).float()
    torch.testing.assert_close(loaded.free_energy({"v": v}), rbm.free_energy({"v": v}), rtol=0, atol=0)


def test_trained_rbm_round_trip_keeps_log_likelihood(tmp_path):
    data = {"v": bars_and_stripes(3)}
    rbm = ebm.RBM(9, 4, seed=0)
    ebm.fit(rbm, data, epochs=2, batch_size=7, metrics=None)
    rbm.save(tmp_path / "trained.pt")
    loaded = ebm.load(tmp_path / "trained.pt")
    torch.testing.assert_close(ebm.log_likelihood(loaded, data), ebm.log_likelihood(rbm, data), rtol=0, atol=0)


def test_user_subclass_round_trip(tmp_path):
    model = Ising(3, beta=0.7, periodic=False)
    with torch.no_grad():
        model.beta.fill_(1.25)
    model.save(tmp_path / "ising.pt")
    loaded = ebm.load(tmp_path / "ising.pt")
    assert type(loaded) is Ising
    assert loaded.config == {"L": 3, "beta": 0.7, "periodic": False}
    assert loaded.periodic is False
    assert loaded.beta.item() == 1.25


def test_subclass_of_rbm_records_outer_arguments(tmp_path):
    model = WideRBM(5, factor=3, seed=2)
    assert model.config == {"n_visible": 5, "factor": 3, "seed": 2}
    model.save(tmp_path / "wide.pt")
    loaded = ebm.load(tmp_path / "wide.pt")
    assert type(loaded) is WideRBM and loaded.n_hidden == 15
    assert_same_parameters(model, loaded)


def test_save_overwrites_atomically_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "m.pt"
    ebm.RBM(4, 2, seed=0).save(path)
    second = ebm.RBM(4, 2, seed=1)
    second.save(path)
    assert_same_parameters(ebm.load(path), second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "m.pt"
    first = ebm.RBM(4, 2, seed=0)
    first.save(path)
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises, the old file must survive
        atomic_save({"bad": lambda: None}, path)
    assert_same_parameters(ebm.load(path), first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_load_rejects_files_that_are_not_models(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="not a model saved by ebm"):
        ebm.load(path)


def test_float64_model_keeps_its_dtype(tmp_path):
    rbm = ebm.RBM(4, 2, seed=0).double()
    rbm.save(tmp_path / "r.pt")
    assert ebm.load(tmp_path / "r.pt").dtype == torch.float64
