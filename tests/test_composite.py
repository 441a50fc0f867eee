"""The composite sampler: Gibbs for a binary block with Langevin/HMC for a real one, checked
against exact moments of a small Gaussian RBM (hidden states enumerated); NUTS as a part
draws from the conditional given the other blocks as they are now."""

import math

import pytest
import torch
from stattools import z_threshold
from test_langevin import single_thread

import ebm
from ebm.diagnostics import mcse
from ebm.evaluation.enumeration import enumerate_states

__all__ = ["single_thread"]


def small_grbm():
    model = ebm.GaussianRBM(3, 4, init_std=0.6, seed=0)
    with torch.no_grad():
        model.a.copy_(torch.tensor([0.5, -0.5, 0.0]))
        model.b.copy_(torch.tensor([0.3, -0.2, 0.1, 0.0]))
        model.log_sigma.copy_(torch.tensor([0.0, -0.3, 0.3]))
    return model


def exact_means(model):
    """E[v] and E[h] by enumerating h: p(h) ∝ exp(−F(h)), E[v | h] = a + σ ⊙ Wh."""
    (h,) = (s["h"] for s in enumerate_states(model, ["h"]))
    with torch.no_grad():
        p = torch.softmax(-model.free_energy({"h": h}).double(), 0)
        mean_v = p @ model.visible_mean(h).double()
    return mean_v, p @ h.double()


@pytest.mark.parametrize("part", [ebm.Langevin(0.1), ebm.HMC(0.2, 4)], ids=["mala", "hmc"])
def test_composite_matches_exact_grbm_means(part):
    model = small_grbm()
    sampler = ebm.Composite({"h": ebm.Gibbs(), "v": part})
    chains = ebm.sample(model, sampler, n_chains=200, n_steps=300, burn_in=200, seed=0)
    mean_v, mean_h = exact_means(model)
    draws_v, draws_h = chains["v"].double(), chains["h"].double()
    z = torch.cat(
        [
            (draws_v.mean((0, 1)) - mean_v).abs() / mcse(draws_v),
            (draws_h.mean((0, 1)) - mean_h).abs() / mcse(draws_h),
        ]
    )
    assert z.max() < z_threshold(z.numel()), z
    assert "v:accept_prob" in chains.stats and "divergent" in chains.stats
    torch.testing.assert_close(
        chains.energy, model.energy({"v": chains["v"].flatten(0, 1), "h": chains["h"].flatten(0, 1)}).view(300, 200)
    )


def test_composite_with_observed_block_skips_it():
    model = small_grbm()
    v = torch.tensor([[0.2, -1.0, 0.5]])
    sampler = ebm.Composite({"h": ebm.Gibbs(), "v": ebm.Langevin(0.1)})
    chains = ebm.sample(model, sampler, n_chains=300, n_steps=100, observed={"v": v}, seed=1)
    exact = torch.sigmoid(model.hidden_logits(v)).detach().double().squeeze(0)
    draws = chains["h"].double()
    z = (draws.mean((0, 1)) - exact).abs() / mcse(draws)
    assert z.max() < z_threshold(z.numel()), z


class Hierarchy(ebm.EnergyModel):
    """``y ~ N(3, 1)``, ``x | y ~ N(y, 1)``: ``x ~ N(3, 2)``; ``y | x ~ N((3 + x)/2, 1/2)`` for Gibbs."""

    def __init__(self):
        super().__init__(y=ebm.Real(1), x=ebm.Real(1))

    def energy(self, state):
        y, x = state["y"][:, 0], state["x"][:, 0]
        return 0.5 * (y - 3) ** 2 + 0.5 * (x - y) ** 2

    def conditional(self, name, state):
        return torch.distributions.Normal((3 + state["x"]) / 2, 0.5**0.5)


def test_nuts_part_follows_the_other_blocks():
    # Every chain starts at y = 0: a NUTS part that kept the potential of its first state
    # would draw x ~ N(0, 1) for ever (measured: mean x -0.05, z = -62).
    n = 6
    sampler = ebm.Composite({"y": ebm.Gibbs(), "x": ebm.NUTS(warmup_steps=100)})
    start = {"y": torch.zeros(n, 1), "x": torch.zeros(n, 1)}
    # y's autocorrelation is 1/2 per sweep: 20 sweeps take the start's bias of 3 below 1e-5
    chains = ebm.sample(Hierarchy(), sampler, n_steps=200, burn_in=20, init=start, seed=0)
    x = chains["x"].double()
    square = (x - 3).square()
    z = torch.cat([(x.mean((0, 1)) - 3).abs() / mcse(x), (square.mean((0, 1)) - 2).abs() / mcse(square)])
    assert z.max() < z_threshold(z.numel()), z
    assert chains.n_divergent == 0


def test_composite_errors():
    model = small_grbm()
    with pytest.raises(ValueError, match="no sampler"):
        ebm.sample(model, ebm.Composite({"h": ebm.Gibbs()}), n_chains=2, n_steps=1)
    with pytest.raises(ValueError, match="more than one"):
        ebm.Composite({"h": ebm.Gibbs(), ("h", "v"): ebm.HMC()})
    with pytest.raises(ValueError, match="unknown"):
        ebm.sample(model, ebm.Composite({"h": ebm.Gibbs(), "v": ebm.HMC(), "y": ebm.HMC()}), n_chains=2, n_steps=1)
    with pytest.raises(TypeError, match="Real blocks only"):
        ebm.sample(model, ebm.Composite({"h": ebm.Langevin(), "v": ebm.Gibbs()}), n_chains=2, n_steps=1)


def test_composite_drives_pcd_training_of_a_grbm():
    # PCD refreshes the composite after every optimizer step (the Langevin part's cached
    # energy and gradient belong to the old parameters); two standardised clusters, where
    # N(0, I) is the best structureless fit.
    generator = torch.Generator().manual_seed(3)
    sign = (torch.rand(600, 1, generator=generator) < 0.5).float() * 2 - 1
    data = sign * torch.tensor([1.5, 1.0]) + 0.3 * torch.randn(600, 2, generator=generator)
    data = (data - data.mean(0)) / data.std(0)
    sampler = ebm.Composite({"h": ebm.Gibbs(), "v": ebm.Langevin(0.1, adapt_step_size=False, adapt_mass=False)})
    model = ebm.GaussianRBM(2, 4, seed=0)
    history = ebm.fit(model, {"v": data}, sampler=sampler, epochs=5, batch_size=50, lr=0.02, progress=False,
                      metrics=["log_likelihood"])  # fmt: skip
    baseline = -math.log(2 * math.pi) - 1.0
    assert history["log_likelihood"][-1] > baseline + 0.2, history["log_likelihood"]
