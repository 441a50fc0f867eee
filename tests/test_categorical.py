"""ebm.Categorical: one-hot states, support checks, enumeration, exact log Z, sampling."""

import pytest
import torch
from lattice_models import Potts

import ebm
from ebm.evaluation.enumeration import enumerate_states, n_states

pytestmark = pytest.mark.usefixtures("one_thread")


def test_random_states_are_one_hot_and_uniform():
    domain = ebm.Categorical(3, 4, 5)
    assert domain.shape == (4, 5, 3) and domain.n_sites == 20 and domain.n_values == 3
    x = domain.random(3000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x.sum(-1), torch.ones(3000, 4, 5))
    counts = x.sum((0, 1, 2))  # 60,000 draws over 3 values: sd of a count ~ 115
    assert (counts - 20_000).abs().max() < 6 * 115
    domain.validate("x", x)
    assert repr(domain) == "Categorical(3, 4, 5)"


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.full((2, 2, 3), 0.5), "entries must be 0 or 1"),
        (torch.zeros(2, 2, 3), "exactly one 1"),
        (torch.ones(2, 2, 3), "exactly one 1"),
    ],
)
def test_support_checks_name_the_block(bad, message):
    with pytest.raises(ValueError, match=message):
        ebm.Categorical(3, 2).validate("x", bad)


def test_bad_number_of_categories():
    with pytest.raises(ValueError, match="n_categories >= 2"):
        ebm.Categorical(1, 3)


def test_enumeration_and_exact_log_partition():
    model = Potts(3, 2, 0.7, field=0.2)
    assert n_states(model, ["x"]) == 3**4
    states = torch.cat([c["x"] for c in enumerate_states(model, ["x"], chunk_size=10)])
    assert states.shape == (81, 2, 2, 3) and len(torch.unique(states.argmax(-1).flatten(1), dim=0)) == 81
    with torch.no_grad():
        brute = torch.logsumexp(-model.energy({"x": states}).double(), 0).item()
    assert float(ebm.log_partition(model)) == pytest.approx(brute, abs=1e-9)
    with torch.no_grad():
        exact_rows = -model.energy({"x": states[:5]}).double() - brute
    # float32 model: agreement to a few float32 ulps
    torch.testing.assert_close(ebm.log_likelihood(model, {"x": states[:5]}).double(), exact_rows, rtol=1e-6, atol=0)


def test_sampling_keeps_one_hot_states_and_checks_init():
    model = Potts(4, 3, 0.5)
    chains = ebm.sample(model, ebm.Gibbs(), n_chains=16, n_steps=5, seed=0)
    assert torch.equal(chains["x"].sum(-1), torch.ones(5, 16, 3, 3))
    with pytest.raises(ValueError, match="one-hot"):
        ebm.sample(model, ebm.Gibbs(), init={"x": torch.zeros(2, 3, 3, 4)}, n_steps=2)


def test_samples_plot_shows_codes_and_pseudo_likelihood_refuses():
    from ebm.evaluation.pseudo import pseudo_log_likelihood

    model = Potts(3, 4, 0.5)
    chains = ebm.sample(model, ebm.Gibbs(), n_chains=4, n_steps=2, seed=0)
    image = torch.as_tensor(ebm.plot.samples(chains).axes[0].images[0].get_array())
    assert set(image.unique().tolist()) <= {0.0, 1.0, 2.0} and image.max() == 2  # category codes, not one-hot
    with pytest.raises(ValueError, match="two-valued"):
        pseudo_log_likelihood(model, {"x": chains.last["x"]})
