"""chains.summary(), chains.apply() and chains.to_arviz()."""

import sys
import warnings

import pytest
import torch
from models import Ising
from test_langevin import Cliff

import ebm
from ebm import reliability
from ebm.chains import Chains
from ebm.diagnostics import e_bfmi
from ebm.summary import E_BFMI_LOW, E_BFMI_MIN, Summary, summarize

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
    for stat in ("mean", "sd", "mcse", "mcse_sd", "ess", "ess_tail", "rhat"):
        assert summary["x"][stat].shape == (2, 3)
        assert summary["y"][stat].shape == (40,)
        assert summary["energy"][stat].shape == ()
    # independent standard normals: every mean within 4 MCSE of 0, sd near 1
    x = summary["x"]
    assert (x["mean"].abs() < 4 * x["mcse"]).all()
    assert torch.allclose(x["sd"], torch.ones(2, 3), atol=4 / (2 * N_DRAWS * N_CHAINS) ** 0.5)


def test_sampler_statistics_are_digested():
    sampler = fake_chains().summary().sampler
    # two different things, labelled as such: E[min(1, exp(-dH))] and the fraction of proposals accepted
    assert sampler["mean accept prob"] == pytest.approx(0.75)
    assert sampler["accepted fraction"] == pytest.approx(0.5)
    assert "acceptance" not in sampler and "accept rate" not in sampler
    assert sampler["divergences"] == 2 * N_CHAINS
    assert sampler["step size"] == pytest.approx(0.25)


def test_divergences_count_thinned_out_steps_when_the_sampler_counted_them():
    chains = fake_chains()
    chains.divergences = torch.full((N_CHAINS,), 5)  # every step, recorded or thinned out
    assert chains.summary().sampler["divergences"] == 5 * N_CHAINS


def test_table_shows_sites_ranges_and_sampler():
    text = str(fake_chains().summary())
    assert f"{N_DRAWS} draws x {N_CHAINS} chains" in text
    labels = ("x[0, 0]", "x[1, 2]", "y (40 sites)", "min", "median", "max", "energy", "divergences", "mean accept prob")
    for label in (*labels, "accepted fraction"):
        assert label in text
    header = text.splitlines()[1].split()
    assert header == ["mean", "sd", "mcse", "mcse_sd", "ess_bulk", "ess_tail", "r_hat"]
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
    # ArviZ's own diagnostics on the exported data are ours (in float64: ArviZ ranks float32 in float32)
    chains = fake_chains()
    chains.draws = {k: v.double() for k, v in chains.draws.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        data = chains.to_arviz()
    ours = chains.summary()["x"]
    for key, function, method in (("ess", az.ess, "bulk"), ("ess_tail", az.ess, "tail"), ("rhat", az.rhat, "rank")):
        theirs = torch.as_tensor(function(data, var_names=["x"], method=method)["x"].values)
        torch.testing.assert_close(ours[key].double(), theirs.double(), rtol=1e-6, atol=0)


def test_to_arviz_without_arviz_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "arviz", None)
    with pytest.raises(ImportError, match=r"pip install \"ebm\[arviz\]\""):
        fake_chains().to_arviz()


def blocks_chains(draws: dict[str, torch.Tensor], observed: dict[str, torch.Tensor] | None = None) -> Chains:
    """Chains built directly from draws ``(n_draws, n_chains, *shape)`` (independent normal energies)."""
    n, m = next(iter(draws.values())).shape[:2]
    draws = dict(draws)
    for name, rows in (observed or {}).items():
        draws[name] = rows.unsqueeze(0).expand(n, *rows.shape)
    energy = torch.randn(n, m, generator=torch.Generator().manual_seed(1))
    return Chains(draws, energy, {k: v[-1] for k, v in draws.items()}, frozenset(observed or ()))


def test_constant_sites_are_counted_and_left_out_of_the_ranges():
    x = (torch.rand(N_DRAWS, N_CHAINS, 40, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    x[..., [4, 9]] = 0.0  # an RBM pixel that is always off
    summary = blocks_chains({"v": x}).summary()
    assert summary["v"]["ess"][4].isnan() and summary["v"]["ess"][:4].isfinite().all()
    text = str(summary)
    assert "v (40 sites; 2 constant" in text
    ranges = [line for line in text.splitlines() if line.strip().split()[0] in ("min", "median", "max")]
    assert len(ranges) == 3 and not any("nan" in line for line in ranges)
    small = str(blocks_chains({"v": x[..., 2:6]}).summary())
    assert next(line for line in small.splitlines() if line.startswith("v[2]")).endswith("constant")


def test_rhat_is_not_computed_for_chains_clamped_to_different_rows():
    # chain c is clamped to data row c and its x has mean c: a different target per chain, so R-hat means nothing
    n = 1000
    x = torch.randn(n, N_CHAINS, 2, generator=torch.Generator().manual_seed(3)) + torch.arange(float(N_CHAINS))[:, None]
    rows = torch.arange(N_CHAINS * 3.0).reshape(N_CHAINS, 3)
    summary = blocks_chains({"x": x}, {"d": rows}).summary()
    assert summary.separate_targets
    assert summary["x"]["rhat"].isnan().all() and summary["energy"]["rhat"].isnan().all()
    text = str(summary)
    assert "*" not in text and "r_hat not computed" in text
    # independent draws within each chain: the chains' own ESS add up to about the number of draws (over
    # 200 seeds: 0.944 of them, sd 0.031) where pooling the chains as one target gives 0.0014 of them;
    # the MCSE of the mean is then about 1 / sqrt(draws) (ratio 1.035, sd 0.020)
    assert (summary["x"]["ess"] > 0.7 * n * N_CHAINS).all()
    assert ((summary["x"]["mcse"] * (n * N_CHAINS) ** 0.5 - 1).abs() < 0.25).all()
    # one observation shared by every chain: one target, R-hat as usual (and large here)
    shared = blocks_chains({"x": x}, {"d": rows[:1].expand(N_CHAINS, 3)}).summary()
    assert not shared.separate_targets and (shared["x"]["rhat"] > 1.5).all() and "*" in str(shared)


def test_infinite_rhat_and_low_ess_are_flagged():
    stuck = torch.arange(N_CHAINS * 1.0).expand(N_DRAWS, N_CHAINS)[..., None]  # every chain frozen at its own value
    g = torch.Generator().manual_seed(4)
    sticky = torch.randn(N_DRAWS, N_CHAINS, 1, generator=g).cumsum(0) / 30  # a random walk: tiny ESS
    summary = blocks_chains({"stuck": stuck, "sticky": sticky}).summary()
    assert summary["stuck"]["rhat"].item() == float("inf")
    text = str(summary)
    assert next(line for line in text.splitlines() if line.startswith("stuck[0]")).endswith("inf*!")
    assert next(line for line in text.splitlines() if line.startswith("sticky[0]")).endswith("!")
    problems = summary.problems()
    assert any(p.startswith("stuck: R-hat") for p in problems) and any(p.startswith("sticky: ESS") for p in problems)
    assert fake_chains().summary().problems() == ["12 divergent transitions"]  # independent draws: only those


def test_sample_warns_once_about_unmixed_chains():
    init = {"s": torch.ones(8, 4, 4) * torch.tensor([1.0] * 4 + [-1.0] * 4)[:, None, None]}
    with pytest.warns(RuntimeWarning) as caught:
        ebm.sample(Ising(4, 0.8), ebm.Gibbs(), n_steps=100, init=init, seed=0)
    assert len(caught) == 1
    assert "R-hat > 1.01" in str(caught[0].message) and "Run longer" in str(caught[0].message)


def test_sample_is_silent_on_well_mixed_chains():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ebm.sample(Ising(3, 0.1), ebm.Gibbs(), n_chains=16, n_steps=400, seed=0)


def test_divergence_advice_fits_who_chose_the_step():
    init = {"x": torch.zeros(64, 2)}
    with pytest.warns(RuntimeWarning, match="divergent") as fixed:
        ebm.sample(Cliff(), ebm.HMC(0.8, 3, adapt_step_size=False), n_steps=100, init=init, seed=6)
    assert "Lower the step size" in str(fixed[0].message)
    with pytest.warns(RuntimeWarning, match="divergent") as tuned:
        ebm.sample(Cliff(), ebm.HMC(0.8, 3), n_steps=100, burn_in=100, init=init, seed=6)
    message = str(tuned[0].message)
    assert "target_accept" in message and "Lower the step size" not in message


def test_sample_checks_a_few_suspicious_sites_of_big_blocks(monkeypatch):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(100, 4, 300, generator=g)
    x[:, 0, 123] += 3  # one site where one chain sits elsewhere
    x[:, :, 50] = x[:, :, 50].cumsum(0) / 10  # and one that moves as a random walk
    chains = blocks_chains({"v": x})
    monkeypatch.setattr(reliability, "CHECK_DRAWS", 100 * 4 * 50)
    checked = reliability.check(chains)
    assert checked["v"]["rhat"].numel() <= 2 * reliability.CHECK_SITES
    assert checked["v"]["rhat"].max() > 1.2  # the screen found the bad site
    assert {50, 123} <= set(reliability.suspicious_sites(x).tolist())
    monkeypatch.setattr(reliability, "CHECK_DRAWS", 2**20)
    assert reliability.check(chains)["v"]["rhat"].shape == (300,)


def test_the_screen_finds_a_stuck_chain_at_a_site_far_from_zero_in_float32():
    # sd 0.01 around 10,000: float32 sums of squares would cancel without the screen's shift
    g = torch.Generator().manual_seed(3)
    x = 10_000 + 0.01 * torch.randn(100, 4, 300, generator=g)
    x[:, 0, 77] += 0.05  # one chain five sd off at one site
    assert x.dtype == torch.float32 and 77 in reliability.suspicious_sites(x, k=1).tolist()


def test_a_nan_draw_is_flagged_and_screened_first():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, 3, generator=g)
    x[50, 2, 1] = float("nan")  # one bad draw of one chain
    assert blocks_chains({"v": x}).summary().problems() == ["v: ESS < 100 at 1 of 3 sites (min nan)"]
    big = torch.randn(100, 8, 500, generator=g)
    big[7, 3, 444] = float("nan")
    assert 444 in reliability.suspicious_sites(big).tolist()  # big blocks check it too


# E-BFMI from HMC's Hamiltonian at the draws.


def test_e_bfmi_is_the_squared_steps_over_the_spread_of_each_chain():
    h = torch.tensor([[0.0, 1.0], [1.0, 2.0], [3.0, 1.0], [2.0, 2.0]])
    # chain 0: steps 1, 2, -1 (squares 6), deviations from 1.5 (squares 5): 1.2;
    # chain 1: steps 1, -1, 1 (squares 3), deviations from 1.5 (squares 1): 3
    torch.testing.assert_close(e_bfmi(h), torch.tensor([1.2, 3.0], dtype=torch.float64))
    assert e_bfmi(torch.ones(5, 2)).isnan().all() and e_bfmi(h[:1]).isnan().all()
    with pytest.raises(ValueError, match=r"\(n_draws, n_chains\)"):
        e_bfmi(h[:, 0])


def hamiltonian_chains(slow_chain: int | None = 2) -> Chains:
    """``fake_chains`` with an HMC ``hamiltonian`` record: independent draws (E-BFMI ~ 2), and
    in ``slow_chain`` an AR(1) series with coefficient 0.95 (E-BFMI ~ 2 (1 - 0.95) = 0.1)."""
    chains = fake_chains()
    g = torch.Generator().manual_seed(1)
    h = torch.randn(N_DRAWS, N_CHAINS, generator=g)
    if slow_chain is not None:
        for t in range(1, N_DRAWS):
            h[t, slow_chain] = 0.95 * h[t - 1, slow_chain] + 0.1 * h[t, slow_chain]
    chains.stats["hamiltonian"] = h
    chains.stats["divergent"] = torch.zeros(N_DRAWS, N_CHAINS, dtype=torch.bool)
    return chains


def test_one_chain_with_a_low_e_bfmi_is_flagged_and_named():
    chains = hamiltonian_chains()
    values = e_bfmi(chains.stats["hamiltonian"])
    assert values[2] < 0.2 and (values[[0, 1, 3, 4, 5]] > 1.5).all()  # the mean over chains is ~1.7
    summary = chains.summary()
    assert summary.sampler[E_BFMI_LOW] == 1 and summary.sampler[E_BFMI_MIN] == pytest.approx(values[2].item())
    assert "mean hamiltonian" not in summary.sampler
    line = f"E-BFMI < 0.3 in 1 of {N_CHAINS} chains (min {values[2].item():.3g})"
    assert summary.problems() == [line]
    assert f"! {line}: one momentum draw" in str(summary) and "non-centred" in str(summary)
    with pytest.warns(RuntimeWarning, match=r"E-BFMI < 0.3 in 1 of 6 chains.*not the trajectory length") as caught:
        reliability.warn_unreliable(chains)
    assert len(caught) == 1
    healthy = hamiltonian_chains(slow_chain=None)
    assert healthy.summary().sampler[E_BFMI_LOW] == 0 and not healthy.summary().problems()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reliability.warn_unreliable(healthy)
