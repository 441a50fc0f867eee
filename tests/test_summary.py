"""chains.summary(), chains.apply() and chains.to_arviz()."""

import sys
import warnings

import pytest
import torch

import ebm
from ebm.chains import Chains
from ebm.summary import Summary, summarize

N_DRAWS, N_CHAINS = 200, 6


def fake_chains(observed: bool = False) -> Chains:
    """Independent normal draws for a 2x3 block ``x`` and a 40-site block ``y``, plus sampler records."""
    g = torch.Generator().manual_seed(0)
    draws = {
        "x": torch.randn(N_DRAWS, N_CHAINS, 2, 3, generator=g),
        "y": torch.randn(N_DRAWS, N_CHAINS, 40, generator=g),
    }
    if observed:
        draws["d"] = torch.ones(N_CHAINS, 4).unsqueeze(0).expand(N_DRAWS, N_CHAINS, 4)
    stats = {
        "accept_prob": torch.full((N_DRAWS, N_CHAINS), 0.75),
        "accepted": (torch.arange(N_DRAWS * N_CHAINS).reshape(N_DRAWS, N_CHAINS) % 2 == 0),
        "divergent": torch.zeros(N_DRAWS, N_CHAINS, dtype=torch.bool).index_fill_(0, torch.tensor([3, 7]), True),
        "step_size": torch.full((N_DRAWS, N_CHAINS), 0.25),
    }
    energy = torch.randn(N_DRAWS, N_CHAINS, generator=g)
    last = {k: v[-1] for k, v in draws.items()}
    return Chains(draws, energy, last, frozenset({"d"} if observed else ()), stats)


def test_summary_has_every_statistic_in_the_block_shape():
    summary = fake_chains(observed=True).summary()
    assert isinstance(summary, Summary)
    assert list(summary) == ["x", "y", "energy"]  # observed blocks are data, not summarised
    for stat in ("mean", "sd", "mcse", "ess", "rhat"):
        assert summary["x"][stat].shape == (2, 3)
        assert summary["y"][stat].shape == (40,)
        assert summary["energy"][stat].shape == ()
    # independent standard normals: every mean within 4 MCSE of 0, sd near 1
    x = summary["x"]
    assert (x["mean"].abs() < 4 * x["mcse"]).all()
    assert torch.allclose(x["sd"], torch.ones(2, 3), atol=4 / (2 * N_DRAWS * N_CHAINS) ** 0.5)


def test_sampler_statistics_are_digested():
    sampler = fake_chains().summary().sampler
    assert sampler["acceptance"] == pytest.approx(0.75)
    assert sampler["accept rate"] == pytest.approx(0.5)
    assert sampler["divergences"] == 2 * N_CHAINS
    assert sampler["step size"] == pytest.approx(0.25)


def test_divergences_count_thinned_out_steps_when_the_sampler_counted_them():
    chains = fake_chains()
    chains.divergences = torch.full((N_CHAINS,), 5)  # every step, recorded or thinned out
    assert chains.summary().sampler["divergences"] == 5 * N_CHAINS


def test_table_shows_sites_ranges_and_sampler():
    text = str(fake_chains().summary())
    assert f"{N_DRAWS} draws x {N_CHAINS} chains" in text
    for label in ("x[0, 0]", "x[1, 2]", "y (40 sites)", "min", "median", "max", "energy", "divergences", "acceptance"):
        assert label in text
    header = text.splitlines()[1].split()
    assert header == ["mean", "sd", "mcse", "ess", "r_hat"]
    assert repr(fake_chains().summary()) == text


def test_functions_of_the_state_get_the_same_statistics():
    chains = fake_chains()
    summary = chains.summary(functions={"total": lambda s: s["x"].sum((-2, -1))})
    assert summary["total"]["mean"].shape == ()
    expected = summarize(chains["x"].sum((-2, -1)))
    for stat, value in expected.items():
        torch.testing.assert_close(summary["total"][stat], value)
    with pytest.raises(ValueError, match="clashes"):
        chains.summary(functions={"x": lambda s: s["x"].sum((-2, -1))})


def test_apply_returns_draws_by_chains_in_chunks():
    chains = fake_chains(observed=True)
    fn = lambda s: s["y"].mean(-1) + s["d"].sum(-1)  # noqa: E731
    whole = chains.apply(fn)
    assert whole.shape == (N_DRAWS, N_CHAINS)
    torch.testing.assert_close(whole, chains["y"].mean(-1) + 4)
    torch.testing.assert_close(chains.apply(fn, max_batch=N_CHAINS * 7), whole)
    with pytest.raises(ValueError, match="one value per state"):
        chains.apply(lambda s: s["y"])
    with pytest.raises(TypeError, match="function"):
        chains.apply("y")


def test_summary_of_real_sampling_run():
    rbm = ebm.RBM(6, 4, init_std=0.5, seed=0)
    chains = ebm.sample(rbm, ebm.Gibbs(), n_chains=16, n_steps=100, seed=0)
    summary = chains.summary(functions={"energy again": rbm.energy})
    torch.testing.assert_close(summary["energy again"]["mean"], summary["energy"]["mean"], check_dtype=False)
    assert "v[0]" in str(summary) and "h[3]" in str(summary)


def test_to_arviz_layout():
    az = pytest.importorskip("arviz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        data = fake_chains(observed=True).to_arviz()
    assert tuple(data.posterior["x"].shape) == (N_CHAINS, N_DRAWS, 2, 3)
    assert tuple(data.posterior["y"].shape) == (N_CHAINS, N_DRAWS, 40)
    assert "d" not in data.posterior
    assert tuple(data.observed_data["d"].shape) == (N_CHAINS, 4)
    stats = data.sample_stats
    assert {"lp", "acceptance_rate", "diverging", "accepted", "step_size"} <= set(stats.data_vars)
    assert int(stats["diverging"].sum()) == 2 * N_CHAINS
    # ArviZ's own ESS agrees with ours up to estimator details (rank-normalised vs plain Geyer)
    ours = fake_chains().summary()["x"]["ess"]
    theirs = torch.as_tensor(az.ess(data, var_names=["x"], method="mean")["x"].values)
    assert torch.allclose(ours.double(), theirs.double(), rtol=0.1)


def test_to_arviz_without_arviz_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "arviz", None)
    with pytest.raises(ImportError, match=r"pip install \"ebm\[arviz\]\""):
        fake_chains().to_arviz()
