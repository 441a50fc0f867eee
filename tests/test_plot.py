"""Every plot renders headless to a PNG that is not blank, with labelled axes and no
overlapping labels; ``ax=`` and bad input behave."""

import io
import itertools
import re

import matplotlib.image
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.text import Text
from models import Ising

import ebm
from ebm import plot

# An RGBA image of one flat colour has variance 0; any drawn line, bar or image adds some.
# A figure whose axes are empty (frames and labels only) stays below this.
MIN_PIXEL_VARIANCE = 1e-3


class Gaussian2d(ebm.EnergyModel):
    def __init__(self):
        super().__init__(x=ebm.Real(2))

    def energy(self, state):
        x = state["x"]
        return 0.5 * (x[:, 0] ** 2 + 4 * x[:, 1] ** 2)


@pytest.fixture(scope="module")
def ising_chains():
    return ebm.sample(Ising(4, 0.3), ebm.Gibbs(), n_chains=8, n_steps=60, seed=0)


@pytest.fixture(scope="module")
def real_chains():
    """A Chains of independent correlated 3-d normals with an acceptance record, built directly."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 4, 3, generator=g) @ torch.tensor([[1.0, 0.6, 0.0], [0.0, 0.8, 0.3], [0.0, 0.0, 1.0]])
    energy = 0.5 * (x**2).sum(-1)
    stats = {"accept_prob": torch.rand(100, 4, generator=g)}
    return ebm.Chains({"x": x}, energy, {"x": x[-1]}, frozenset(), stats)


def render(fig: Figure) -> np.ndarray:
    assert isinstance(fig, Figure)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=50)
    buffer.seek(0)
    return matplotlib.image.imread(buffer, format="png")


def check(fig: Figure) -> None:
    """Not blank; every visible panel labelled (x and y, or a title for image grids); no two
    axis labels or titles overlap."""
    pixels = render(fig)
    assert pixels.var() > MIN_PIXEL_VARIANCE
    texts = []
    panels = [a for a in fig.axes if a.get_visible() and a.axison and a.get_label() != "<colorbar>"]
    assert panels
    for a in panels:
        if a.images:
            assert a.get_title()
        else:
            assert a.get_xlabel() and a.get_ylabel()
        texts += [t for t in (a.xaxis.label, a.yaxis.label, a.title) if t.get_text()]
    boxes = [t.get_window_extent() for t in texts]  # laid out by the savefig above
    for (i, b1), (j, b2) in itertools.combinations(enumerate(boxes), 2):
        assert not b1.overlaps(b2), f"'{texts[i].get_text()}' overlaps '{texts[j].get_text()}'"


def magnetisation(state):
    return state["s"].mean((-2, -1))


def test_trace(ising_chains, real_chains):
    check(plot.trace(ising_chains, burn_in=10))
    check(plot.trace(real_chains, {"m": lambda s: s["x"].sum(-1), "x": "x", "accept": "accept_prob"}, coords=[2]))
    check(plot.trace({"a": np.random.default_rng(0).normal(size=(40, 2))}))


def test_default_sites_are_the_most_variable_not_constant_corners():
    # an RBM over 4x4 "images" whose border pixels are always 0 (bias -40: p(1) ~ 4e-18)
    rbm = ebm.RBM(16, 3, seed=0)
    border = torch.ones(4, 4, dtype=torch.bool)
    border[1:3, 1:3] = False
    with torch.no_grad():
        rbm.a.copy_(torch.where(border.flatten(), -40.0, 0.0))
    chains = ebm.sample(rbm, ebm.Gibbs(), n_chains=4, n_steps=30, seed=0)
    assert chains["v"][:, :, border.flatten()].abs().sum() == 0
    centre = {f"v[{i}]" for i in torch.nonzero(~border.flatten()).flatten().tolist()}
    for make in (plot.trace, plot.autocorrelation, plot.running_mean):
        labels = set(re.findall(r"v\[\d+\]", " ".join(t.get_text() for t in make(chains).findobj(Text))))
        assert len(labels) == 3 and labels <= centre, (make.__name__, labels)
    # ties (every site equally variable) keep the first sites, as before
    labels = [a.get_ylabel() for a in plot.trace(torch.ones(5, 2, 6)).axes[::2]]
    assert labels == ["x[0]", "x[1]", "x[2]"]


def test_autocorrelation_and_running_mean(ising_chains, real_chains):
    check(plot.autocorrelation(ising_chains, ["energy", magnetisation], max_lag=20))
    check(plot.running_mean(ising_chains, "s", coords=[(0, 0), (3, 3)]))
    check(plot.running_mean(torch.randn(80, 4)))


def test_energy(ising_chains):
    check(plot.energy(ising_chains, reference=ising_chains.energy[-1], burn_in=5))
    check(plot.energy(torch.randn(30, 2)))


def test_marginals(real_chains):
    check(plot.marginals(real_chains, reference=torch.randn(300, 3)))
    check(plot.marginals(torch.randn(500, 2), coords=[1]))


def test_samples_and_filters(ising_chains):
    check(plot.samples(ising_chains))
    check(plot.samples(torch.rand(6, 12), image_shape=(3, 4), nrow=3))
    check(plot.filters(ebm.RBM(16, 9, init_std=1.0, seed=0)))


def test_density_2d(real_chains):
    check(plot.density_2d(Gaussian2d(), torch.randn(300, 2), resolution=60))
    ring = plot.density_2d(lambda x: ((x**2).sum(-1) - 1) ** 2, xlim=(-2, 2), ylim=(-2, 2), resolution=40, log=True)
    check(ring)
    with pytest.raises(ValueError, match="2 coordinates"):
        plot.density_2d(Gaussian2d(), real_chains)


def test_history():
    rows = [{"epoch": e, "loss": 1 / e, "log_likelihood": -30 + e if e % 2 else None, "time": 0.1 * e} for e in range(1, 9)]
    check(plot.history(rows))
    columns = plot.history({"epoch": [1, 2, 3], "recon": [0.3, 0.2, 0.1], "note": ["a", "b", "c"]})
    assert [a.get_ylabel() for a in columns.axes if a.axison] == ["recon"]
    fig = plot.history(rows, keys=["time"])
    assert [a.get_ylabel() for a in fig.axes if a.axison] == ["time"]


def test_ax_draws_into_an_existing_axes(ising_chains):
    fig = Figure(layout="constrained")
    axes = fig.subplots(1, 3)
    assert plot.trace(ising_chains, "energy", ax=axes[0]) is fig
    assert plot.autocorrelation(ising_chains, ax=axes[1]) is fig
    assert plot.samples(ising_chains, ax=axes[2]) is fig
    check(fig)
    with pytest.raises(ValueError, match="single panel"):
        plot.trace(ising_chains, ["energy", "s"], ax=axes[0])


def test_bad_input_is_explained(ising_chains):
    with pytest.raises(KeyError, match="nothing called 'q'"):
        plot.trace(ising_chains, "q")
    with pytest.raises(IndexError, match="out of range"):
        plot.trace(ising_chains, "s", coords=[99])
    with pytest.raises(ValueError, match="square"):
        plot.samples(torch.rand(4, 10))
    with pytest.raises(TypeError, match="Chains"):
        plot.trace(torch.randn(10, 2), magnetisation)
    with pytest.raises(TypeError, match="list of per-epoch dicts"):
        plot.history(3.0)
    with pytest.raises(KeyError, match="no numeric metric"):
        plot.history([{"loss": 1.0}], keys=["acc"])
