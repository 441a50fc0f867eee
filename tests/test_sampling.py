import pytest
import torch
from models import Ising, random_rbm

import ebm


def test_shapes_burn_in_and_thin():
    rbm = ebm.RBM(6, 4)
    chains = ebm.sample(rbm, ebm.Gibbs(), n_chains=5, n_steps=11, burn_in=3, thin=3)
    assert chains["v"].shape == (3, 5, 6) and chains["h"].shape == (3, 5, 4)
    assert chains.energy.shape == (3, 5) and chains.n_draws == 3 and chains.n_chains == 5
    assert torch.allclose(chains.energy[-1], rbm.energy({k: chains[k][-1] for k in chains.keys()}).detach())
    assert not chains["v"].requires_grad and not chains.energy.requires_grad
    assert "3 draws x 5 chains" in repr(chains)


def test_recorded_draws_are_the_chain_states():
    """Thinning keeps every thin-th state of the same run."""
    rbm = random_rbm(5, 3)
    full = ebm.sample(rbm, ebm.Gibbs(), n_chains=4, n_steps=12, seed=7)
    thinned = ebm.sample(rbm, ebm.Gibbs(), n_chains=4, n_steps=12, thin=4, seed=7)
    assert torch.equal(thinned["v"], full["v"][3::4])
    burned = ebm.sample(rbm, ebm.Gibbs(), n_chains=4, n_steps=8, burn_in=4, seed=7)
    assert torch.equal(burned["h"], full["h"][4:])


def test_seeded_runs_repeat_and_seeds_differ():
    model = Ising(4, 0.4)
    a = ebm.sample(model, ebm.Gibbs(), n_chains=8, n_steps=5, seed=11)
    b = ebm.sample(model, ebm.Gibbs(), n_chains=8, n_steps=5, seed=11)
    c = ebm.sample(model, ebm.Gibbs(), n_chains=8, n_steps=5, seed=12)
    assert torch.equal(a["s"], b["s"]) and torch.equal(a.energy, b.energy)
    assert not torch.equal(a["s"], c["s"])


def test_continuing_from_last_equals_one_long_run():
    rbm = random_rbm(5, 3)
    long = ebm.sample(rbm, ebm.Gibbs(), n_chains=6, n_steps=20, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    first = ebm.sample(rbm, ebm.Gibbs(), n_chains=6, n_steps=10, generator=g)
    second = ebm.sample(rbm, ebm.Gibbs(), n_steps=10, init=first.last, generator=g)
    assert torch.equal(second["v"], long["v"][10:]) and torch.equal(second.last["h"], long.last["h"])


def test_observed_blocks_never_change_and_data_is_not_mutated():
    rbm = random_rbm(5, 3)
    data = (torch.rand(7, 5, generator=torch.Generator().manual_seed(0)) < 0.5).double()
    copy = data.clone()
    chains = ebm.sample(rbm, ebm.Gibbs(), n_steps=30, observed={"v": data}, init={"h": torch.ones(7, 3).double()})
    assert chains.n_chains == 7 and chains.observed == {"v"}
    assert torch.equal(data, copy)
    # chains["v"] is rebuilt from the input; the sampler's own state must keep the data, and
    # the energy recorded at every step (of the state the sampler actually holds) must be
    # the energy of the data with that step's h
    assert torch.equal(chains.sampler_state.state["v"], data) and torch.equal(chains.last["v"], data)
    with torch.no_grad():
        clamped = rbm.energy({"v": data.expand(30, 7, 5).flatten(0, 1), "h": chains["h"].flatten(0, 1)})
    torch.testing.assert_close(chains.energy, clamped.view(30, 7), rtol=0, atol=1e-12)
    assert chains["h"].std() > 0


def test_one_observation_is_shared_by_all_chains():
    rbm = random_rbm(5, 3)
    chains = ebm.sample(rbm, ebm.Gibbs(), n_chains=9, n_steps=2, observed={"v": torch.ones(5).double()})
    assert chains["v"].shape == (2, 9, 5) and bool((chains["v"] == 1).all())


def test_init_is_not_mutated_and_used():
    rbm = random_rbm(5, 3)
    init = {"v": torch.zeros(4, 5).double(), "h": torch.zeros(4, 3).double()}
    ebm.sample(rbm, ebm.Gibbs(), n_steps=3, init=init)
    assert float(init["v"].abs().sum()) == 0.0 and float(init["h"].abs().sum()) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "n_chains, observed data or an init"),
        ({"n_chains": 0}, "positive integer"),
        ({"n_chains": 3, "observed": {"v": torch.zeros(4, 5)}}, "one chain per data row"),
        ({"n_chains": 3, "init": {"h": torch.zeros(4, 2)}}, "init has 4 chains"),
        ({"n_chains": 3, "n_steps": -1}, "n_steps"),
        ({"n_chains": 3, "thin": 0}, "thin"),
        ({"observed": {"x": torch.zeros(4, 5)}}, "unknown block"),
        ({"observed": {"v": torch.zeros(4, 6)}}, "shape"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ebm.sample(ebm.RBM(5, 2), ebm.Gibbs(), **kwargs)


def test_summary_has_every_statistic_with_block_shape():
    chains = ebm.sample(Ising(3, 0.2), ebm.Gibbs(), n_chains=16, n_steps=40, burn_in=5)
    summary = chains.summary()
    for key in ("mean", "sd", "mcse", "ess", "rhat"):
        assert summary["s"][key].shape == (3, 3)
    assert "r_hat" in str(summary)
