"""The discrete examples' --fast modes, as CI runs them, with checks on what they compute."""

import importlib.util
from pathlib import Path

import pytest
from shared_data import DATA, needs_mnist

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# The fast modes multiply tiny matrices: a second thread only adds synchronisation.
pytestmark = pytest.mark.usefixtures("one_thread")


def example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_pngs(folder: Path, names: list[str]) -> None:
    for name in names:
        assert (folder / name).stat().st_size > 5_000, name


def test_ising_fast_matches_onsager_away_from_tc(tmp_path):
    ising = example("ising")
    result = ising.main(["--fast", "--out", str(tmp_path)])
    assert_pngs(tmp_path, ["ising_curves.png", "ising_chains.png"])
    T = result["temperatures"]
    cold, hot = T.index(1.5), T.index(3.5)
    # At T = 1.5 an 8x8 lattice is as ordered as the infinite one (finite-size shifts < 1e-3).
    assert abs(result["m"][cold] - ising.onsager_magnetisation(1.5)) < 4 * result["m_err"][cold] + 0.005
    for i in (cold, hot):
        assert abs(result["e"][i] - ising.onsager_energy(T[i])) < 4 * result["e_err"][i] + 0.02
    assert result["m"][hot] < 0.5 * result["m"][cold]


def test_onsager_formulas():
    ising = example("ising")
    assert ising.onsager_energy(ising.T_CRITICAL) == pytest.approx(-(2**0.5), abs=1e-9)
    assert ising.onsager_energy(0.3) == pytest.approx(-2.0, abs=1e-6)
    # high temperature: e ≈ -2 tanh(β) to leading order
    assert ising.onsager_energy(50.0) == pytest.approx(-2 * 0.02, rel=1e-3)
    assert ising.onsager_magnetisation(ising.T_CRITICAL + 1e-3) == 0.0
    assert ising.onsager_magnetisation(1.0) == pytest.approx(0.999275, abs=1e-5)
    assert ising.elliptic_k(0.0) == pytest.approx(3.141592653589793 / 2)


def test_rbm_digits_fast(tmp_path):
    result = example("rbm_digits").main(["--fast", "--out", str(tmp_path)])
    assert_pngs(tmp_path, ["rbm_digits_loglik.png", "rbm_digits_samples.png", "rbm_digits_filters.png"])
    assert result["PCD-1"] > result["baseline"] + 1.0


@needs_mnist
def test_rbm_mnist_fast(tmp_path):
    result = example("rbm_mnist").main(["--fast", "--out", str(tmp_path), "--data-root", str(DATA / "mnist")])
    assert_pngs(tmp_path, ["rbm_mnist_loglik.png", "rbm_mnist_samples.png", "rbm_mnist_filters.png"])
    # uniform pixels give -784 ln 2 = -543 nats; two short epochs already get far from that
    assert -250 < result["test"] < -100
