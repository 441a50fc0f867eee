"""ESS, R-hat, autocorrelation and MCSE: against ArviZ on the same draws, and on draws with known answers.

The ESS estimator is itself random. Its spread is measured over R independent replicates
(extra trailing sites of one tensor, fixed seed); tolerances are multiples of that spread:
a single estimate must lie within 3 sd of the truth, and the estimator's bias (mean over
replicates minus truth) must be small against its own noise (under 0.5 sd). An ESS that
is wrong by a factor of 2 misses these by more than 10 sd.
"""

import math

import pytest
import torch
from models import Ising

import ebm
from ebm import diagnostics

N_DRAWS, N_CHAINS, REPLICATES = 500, 4, 200


def ar1(phi: float, generator: torch.Generator) -> torch.Tensor:
    """Stationary AR(1) draws ``x_t = phi x_{t-1} + e_t``, shape ``(N_DRAWS, N_CHAINS, REPLICATES)``."""
    noise = torch.randn(N_DRAWS, N_CHAINS, REPLICATES, generator=generator, dtype=torch.float64)
    x = torch.empty_like(noise)
    x[0] = noise[0] / math.sqrt(1 - phi**2)
    for t in range(1, N_DRAWS):
        x[t] = phi * x[t - 1] + noise[t]
    return x


def ar1_ess(phi: float) -> float:
    """Exact ESS of a stationary AR(1) chain of finite length: n / (1 + 2 sum_k (1 - k/n) phi^k), per chain."""
    k = torch.arange(1, N_DRAWS, dtype=torch.float64)
    tau = 1 + 2 * ((1 - k / N_DRAWS) * phi**k).sum().item()
    return N_CHAINS * N_DRAWS / tau


def check_ess(estimates: torch.Tensor, truth: float) -> None:
    sd = estimates.std().item()
    assert abs(estimates[0].item() - truth) < 3 * sd, (estimates[0].item(), truth, sd)
    assert abs(estimates.mean().item() - truth) < 0.5 * sd, (estimates.mean().item(), truth, sd)


def test_ess_of_independent_draws_is_their_number():
    x = torch.randn(N_DRAWS, N_CHAINS, REPLICATES, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    estimates = diagnostics.ess(x)
    assert estimates.shape == (REPLICATES,)
    check_ess(estimates, N_DRAWS * N_CHAINS)


@pytest.mark.parametrize("phi", [0.5, 0.9])
def test_ess_of_ar1_chain_matches_closed_form(phi):
    estimates = diagnostics.ess(ar1(phi, torch.Generator().manual_seed(1)))
    check_ess(estimates, ar1_ess(phi))
    # the finite-length correction to the asymptotic n (1 - phi) / (1 + phi) is O(1 / (n (1 - phi)))
    assert ar1_ess(phi) == pytest.approx(N_CHAINS * N_DRAWS * (1 - phi) / (1 + phi), rel=2 / (N_DRAWS * (1 - phi)))


def test_autocorrelation_of_ar1_decays_as_phi_to_the_lag():
    phi = 0.7
    rho = diagnostics.autocorrelation(ar1(phi, torch.Generator().manual_seed(2)))
    assert rho.shape == (N_DRAWS, N_CHAINS, REPLICATES)
    mean_rho = rho.mean((1, 2))
    # Bartlett: the sd of one lag-k estimate is about sqrt((1 + phi^2) / (1 - phi^2) / n); averaged over
    # N_CHAINS * REPLICATES independent chains. The estimator's O(1/n) bias is below that.
    se = math.sqrt((1 + phi**2) / (1 - phi**2) / N_DRAWS / (N_CHAINS * REPLICATES))
    for lag in range(5):
        assert abs(mean_rho[lag].item() - phi**lag) < 4 * se + 2 / N_DRAWS


def test_mcse_is_sd_over_sqrt_ess():
    x = ar1(0.5, torch.Generator().manual_seed(3))
    mcse = diagnostics.mcse(x)
    few = x[..., :10]
    torch.testing.assert_close(mcse[:10], few.flatten(0, 1).std(0) / diagnostics.ess(few, "mean").sqrt())
    torch.testing.assert_close(diagnostics.mcse(few, diagnostics.ess(few, "mean")), mcse[:10])
    # it predicts the spread of the means across replicates (2000 draws, ESS ~ 667); the sd of an sd
    # estimated from R replicates is about sd / sqrt(2R)
    spread = x.mean((0, 1)).std().item()
    assert mcse.mean().item() == pytest.approx(spread, rel=4 / math.sqrt(2 * REPLICATES))


def test_rhat_is_one_for_mixed_chains_and_flags_separate_modes():
    generator = torch.Generator().manual_seed(4)
    mixed = torch.randn(N_DRAWS, 8, 50, generator=generator, dtype=torch.float64)
    assert diagnostics.rhat(mixed).max().item() < 1.01
    # half the chains sit in a mode at +2, half at -2 (sd 1 each): between-chain variance dominates
    modes = mixed + torch.tensor([2.0] * 4 + [-2.0] * 4, dtype=torch.float64)[:, None]
    assert diagnostics.rhat(modes).min().item() > 1.5


def magnetisation(state):
    return state["s"].mean((-2, -1))


def test_rhat_flags_ising_chains_started_in_different_modes():
    # 4x4 at beta = 0.8 (deep in the ordered phase): Gibbs chains started all up / all down stay there
    n = 8
    init = {"s": torch.ones(n, 4, 4) * torch.tensor([1.0] * 4 + [-1.0] * 4)[:, None, None]}
    chains = ebm.sample(Ising(4, 0.8), ebm.Gibbs(), n_steps=100, init=init, seed=0)
    summary = chains.summary(functions={"m": magnetisation})
    assert summary["m"]["rhat"].item() > 1.5
    assert "*" in str(summary)
    # the same model at high temperature mixes: R-hat of the magnetisation is near 1
    hot = ebm.sample(Ising(4, 0.1), ebm.Gibbs(), n_steps=100, init=init, seed=0)
    assert hot.summary(functions={"m": magnetisation})["m"]["rhat"].item() < 1.05


def test_bad_layout_is_rejected():
    with pytest.raises(ValueError, match="n_draws, n_chains"):
        diagnostics.ess(torch.zeros(10))
    with pytest.raises(ValueError, match="at least 4 draws"):
        diagnostics.rhat(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="bulk"):
        diagnostics.ess(torch.zeros(10, 2), method="median")
    with pytest.raises(ValueError, match="mean"):
        diagnostics.mcse(torch.zeros(10, 2), method="median")
    with pytest.raises(ValueError, match="unknown statistics"):
        diagnostics.compute(torch.zeros(10, 2), ["ess"])
    assert diagnostics.ess(torch.randn(3, 2, 4)).isnan().all()  # too few draws to split: NaN, as ArviZ


def draw_cases() -> dict[str, torch.Tensor]:
    """Draws ``(n_draws, n_chains, sites)`` of the kinds the diagnostics must get right."""
    g = torch.Generator().manual_seed(7)
    phis = torch.tensor([0.0, 0.5, 0.95, -0.9, 0.3], dtype=torch.float64)
    noise = torch.randn(301, 4, 5, generator=g, dtype=torch.float64)
    ar = noise.clone()
    for t in range(1, ar.shape[0]):
        ar[t] = phis * ar[t - 1] + noise[t]
    antithetic = torch.randn(200, 4, 3, generator=g, dtype=torch.float64)
    antithetic[1::2] = -antithetic[0::2]
    spread = torch.randn(500, 4, 3, generator=g, dtype=torch.float64)
    spread[:, 0] *= 3
    shifted = torch.randn(100, 6, 2, generator=g, dtype=torch.float64) + torch.linspace(0, 1, 6)[:, None]
    binary = (torch.rand(60, 5, 8, generator=g) < torch.linspace(0.01, 0.99, 8)).float()  # ties; float32
    halves = torch.zeros(100, 4, 2, dtype=torch.float64)  # two values, exactly half each: the folded draws are constant
    for site in range(2):
        halves[..., site].view(-1)[torch.randperm(400, generator=g)[:200]] = 1.0
    return {
        "ar1 (odd length)": ar,
        "antithetic": antithetic,
        "one chain with 3x spread": spread,
        "shifted chains": shifted,
        "binary with ties": binary,
        "two values, half each": halves,
        "heavy tailed, one chain": torch.randn(40, 1, 3, generator=g, dtype=torch.float64).exp() ** 3,
        "4 draws": torch.randn(4, 3, 2, generator=g, dtype=torch.float64),
    }


ARVIZ_NAMES = {
    "ess_bulk": ("ess", "bulk"),
    "ess_tail": ("ess", "tail"),
    "ess_mean": ("ess", "mean"),
    "rhat": ("rhat", "rank"),
    "mcse_mean": ("mcse", "mean"),
    "mcse_sd": ("mcse", "sd"),
}


@pytest.mark.parametrize("case", list(draw_cases()))
def test_every_statistic_matches_arviz(case):
    az = pytest.importorskip("arviz")
    x = draw_cases()[case]
    ours = diagnostics.compute(x)
    chains_first = x.double().transpose(0, 1).numpy()
    for name, (function, method) in ARVIZ_NAMES.items():
        if name == "rhat" and x.shape[1] == 1:
            continue  # ArviZ gives NaN for one chain; ours is the split R-hat of its halves
        arviz = getattr(az, function)
        theirs = torch.tensor([float(arviz(chains_first[..., i], method=method)) for i in range(x.shape[2])]).double()
        label = f"{case}, {name}"
        torch.testing.assert_close(ours[name].double(), theirs, rtol=1e-6, atol=0, msg=lambda m, at=label: f"{at}: {m}")
    # the public names are the same numbers
    torch.testing.assert_close(diagnostics.ess(x), ours["ess_bulk"])
    torch.testing.assert_close(diagnostics.ess(x, "tail"), ours["ess_tail"])
    torch.testing.assert_close(diagnostics.mcse(x), ours["mcse_mean"])
    torch.testing.assert_close(diagnostics.mcse(x, method="sd"), ours["mcse_sd"])


def test_antithetic_draws_get_a_positive_bounded_ess():
    x = draw_cases()["antithetic"]
    n = x.shape[0] * x.shape[1]
    # tau is bounded below by 1 / log10(N): ESS at most N log10 N, never negative (the old estimator gave -1629)
    torch.testing.assert_close(diagnostics.ess(x), torch.full((3,), n * math.log10(n), dtype=torch.float64))
    assert (diagnostics.mcse(x) > 0).all()


def test_folded_rhat_flags_a_chain_with_three_times_the_spread():
    # same mean in every chain, so only the folded (spread) R-hat sees it; the smallest of 40 seeds x 50 sites is 1.105
    x = torch.randn(500, 4, 50, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    x[:, 0] *= 3
    assert diagnostics.rhat(x).min().item() > 1.05


def test_constant_sites_get_nan_and_chunking_changes_nothing(monkeypatch):
    x = ar1(0.5, torch.Generator().manual_seed(9))[:, :, :12].clone()
    x[..., 3] = 2.0
    whole = diagnostics.compute(x)
    for name, value in whole.items():
        assert value[3].isnan(), name
        assert value[torch.arange(12) != 3].isfinite().all(), name
    monkeypatch.setattr(diagnostics, "WORKSPACE", 5)  # one site per chunk
    for name, value in diagnostics.compute(x).items():
        torch.testing.assert_close(value, whole[name], equal_nan=True)


def test_chains_stuck_at_different_values_get_infinite_rhat():
    x = torch.arange(4.0).expand(50, 4)
    assert diagnostics.rhat(x).item() == math.inf
