"""Continuous models against closed forms: GaussianRBM free energies and exact log Z,
LinearGaussian conditionals and maximum likelihood, MLPEnergy, the 2-D toy densities and
grid quadrature; NUTS as a reference sampler; GaussianRBM training stays finite."""

import math

import pytest
import torch
from test_composite import small_grbm
from test_langevin import DiagonalGaussian, single_thread, z_threshold

import ebm
from ebm.datasets import TOY2D, toy2d
from ebm.diagnostics import mcse
from ebm.evaluation.enumeration import enumerate_states
from ebm.evaluation.quadrature import grid, grid_log_partition, kl_divergence

__all__ = ["single_thread"]


def test_grbm_free_energy_of_v_sums_out_h():
    model = small_grbm().double()
    v = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (h,) = (s["h"] for s in enumerate_states(model, ["h"]))
    with torch.no_grad():
        energies = torch.stack([model.energy({"v": v, "h": hh.expand(5, -1)}) for hh in h], 1)
        torch.testing.assert_close(model.free_energy({"v": v}), -torch.logsumexp(-energies, 1))


def test_grbm_exact_log_partition_matches_quadrature_over_v():
    model = ebm.GaussianRBM(2, 3, init_std=0.8, seed=1).double()
    with torch.no_grad():
        model.a.copy_(torch.tensor([0.3, -0.2]))
        model.log_sigma.copy_(torch.tensor([0.2, -0.1]))
    log_z = ebm.log_partition(model)
    points, area = grid((-12.0, 12.0), 600, torch.float64)
    with torch.no_grad():
        quadrature = torch.logsumexp(-model.free_energy({"v": points}), 0).item() + math.log(area)
    assert abs(float(log_z) - quadrature) < 1e-6
    ll = ebm.log_likelihood(model, {"v": points})
    assert abs((ll.exp() * area).sum().item() - 1) < 1e-6


def test_grbm_conditionals_agree_with_energy():
    model = small_grbm().double()
    generator = torch.Generator().manual_seed(2)
    h = (torch.rand(4, 4, generator=generator, dtype=torch.float64) < 0.5).double()
    v1, v2 = (torch.randn(4, 3, generator=generator, dtype=torch.float64) for _ in range(2))
    with torch.no_grad():
        p_v = model.conditional("v", {"h": h})
        # log p(v1|h) − log p(v2|h) = E(v2, h) − E(v1, h)
        lhs = p_v.log_prob(v1).sum(-1) - p_v.log_prob(v2).sum(-1)
        rhs = model.energy({"v": v2, "h": h}) - model.energy({"v": v1, "h": h})
        torch.testing.assert_close(lhs, rhs)
        logits = model.conditional("h", {"v": v1}).logits
        flip = 1 - h
        for j in range(4):
            up, down = h.clone(), h.clone()
            up[:, j], down[:, j] = 1.0, 0.0
            diff = model.energy({"v": v1, "h": down}) - model.energy({"v": v1, "h": up})
            torch.testing.assert_close(logits[:, j], diff)
        assert flip.shape == h.shape


def test_grbm_learned_sigma_and_errors():
    model = ebm.GaussianRBM(3, 2, learn_sigma=True)
    assert any(name == "log_sigma" for name, _ in model.named_parameters())
    assert "log_sigma" in dict(ebm.GaussianRBM(3, 2, learn_sigma=False).named_buffers())
    with pytest.raises(ValueError, match="sigma"):
        ebm.GaussianRBM(3, 2, sigma=0.0)
    with pytest.raises(NotImplementedError):
        small_grbm().free_energy({"v": torch.zeros(1, 3), "h": torch.zeros(1, 4)})


def test_grbm_training_on_standardised_data_stays_finite_and_improves():
    # Two clusters, standardised: N(0, I) is the best a model without structure can do.
    generator = torch.Generator().manual_seed(3)
    sign = (torch.rand(1000, 1, generator=generator) < 0.5).float() * 2 - 1
    data = sign * torch.tensor([1.5, 1.0]) + 0.3 * torch.randn(1000, 2, generator=generator)
    data = (data - data.mean(0)) / data.std(0)
    baseline = -math.log(2 * math.pi) - 1.0
    model = ebm.GaussianRBM(2, 4, seed=0)
    history = ebm.fit(model, {"v": data}, sampler=ebm.Gibbs(), epochs=5, batch_size=50, lr=0.02, progress=False,
                      metrics=["log_likelihood"])  # fmt: skip
    lls = history["log_likelihood"]
    assert all(math.isfinite(v) for v in lls)
    assert lls[-1] > baseline + 0.5, (baseline, lls)


def test_linear_gaussian_conditional_and_marginal():
    model = ebm.LinearGaussian(4, 2, sigma=0.6, init_std=1.0, seed=0).double()
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    z1, z2 = (torch.randn(3, 2, generator=generator, dtype=torch.float64) for _ in range(2))
    with torch.no_grad():
        post = model.conditional("z", {"x": x})
        lhs = post.log_prob(z1) - post.log_prob(z2)
        rhs = model.energy({"x": x, "z": z2}) - model.energy({"x": x, "z": z1})
        torch.testing.assert_close(lhs, rhs)
        # log p(x) = −E(x, z) − log Z − log p(z | x) for any z, with log Z known in closed form
        log_z = 2 * math.log(2 * math.pi * 0.36) + math.log(2 * math.pi)
        torch.testing.assert_close(model.marginal_log_prob(x), -model.energy({"x": x, "z": z1}) - log_z - post.log_prob(z1))


def test_linear_gaussian_maximum_likelihood_is_a_maximum():
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(500, 5, generator=generator, dtype=torch.float64) @ torch.randn(5, 5, generator=generator).double()
    best = ebm.LinearGaussian.maximum_likelihood(x, 2)
    with torch.no_grad():
        ll = best.marginal_log_prob(x).mean()
        for parameter in (best.W, best.mu, best.log_sigma):
            original = parameter.clone()
            parameter.add_(0.01 * torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
            assert best.marginal_log_prob(x).mean() < ll
            parameter.copy_(original)
    with pytest.raises(ValueError, match="n_latent"):
        ebm.LinearGaussian.maximum_likelihood(x, 5)


def test_mlp_energy_shapes_seed_and_save(tmp_path):
    a, b = ebm.MLPEnergy(2, hidden=(8,), seed=0), ebm.MLPEnergy(2, hidden=(8,), seed=0)
    x = torch.randn(7, 2)
    torch.testing.assert_close(a.energy({"x": x}), b.energy({"x": x}))
    assert a.energy({"x": x}).shape == (7,)
    a.save(tmp_path / "mlp.pt")
    torch.testing.assert_close(ebm.load(tmp_path / "mlp.pt").energy({"x": x}), a.energy({"x": x}))
    with pytest.raises(ValueError, match="hidden"):
        ebm.MLPEnergy(2, hidden=())


def test_grid_log_partition_and_kl_of_a_gaussian():
    model = DiagonalGaussian(torch.tensor([0.5, 2.0]), means=torch.tensor([0.3, -0.4])).double()
    log_z = grid_log_partition(model, (-10.0, 10.0), 400)
    assert abs(float(log_z) - math.log(2 * math.pi * 1.0)) < 1e-6
    # KL(N(0, I) ‖ model) in closed form
    var, mean = model.variance, model.mean
    exact = 0.5 * (1 / var + mean.square() / var - 1 + var.log()).sum().item()

    def standard(points):
        return -0.5 * points.square().sum(-1) - math.log(2 * math.pi)

    assert abs(kl_divergence(standard, model, (-10.0, 10.0), 400) - exact) < 1e-5
    with pytest.raises(ValueError, match=r"Real\(2\)"):
        grid_log_partition(ebm.RBM(2, 2))


@pytest.mark.parametrize("name", TOY2D)
def test_toy_density_samples_match_log_prob(name):
    # The cross-entropy of samples under log_prob estimates the entropy computed on the
    # grid; the two agree within the Monte-Carlo error only if sample() and log_prob() agree.
    density = toy2d(name)
    points, area = grid(density.bounds, 300, torch.float64)
    log_p = density.log_prob(points)
    p = log_p.exp()
    assert abs((p * area).sum().item() - 1) < 2e-3
    entropy = -(p * log_p.nan_to_num(neginf=0.0) * area).sum().item()
    x = density.sample(20_000, torch.Generator().manual_seed(6)).double()
    log_q = density.log_prob(x)
    assert torch.isfinite(log_q).all()
    stderr = log_q.std().item() / math.sqrt(len(x))
    assert abs(-log_q.mean().item() - entropy) < z_threshold(len(TOY2D)) * stderr + 5e-3


def test_toy_density_errors():
    with pytest.raises(ValueError, match="unknown"):
        toy2d("spiral")
    with pytest.raises(ValueError, match=r"\(m, 2\)"):
        toy2d("moons").log_prob(torch.zeros(3))


def test_nuts_reference_matches_gaussian_and_is_reproducible():
    model = DiagonalGaussian(torch.tensor([0.2, 3.0]), means=torch.tensor([1.0, -1.0]))
    chains = ebm.sample(model, ebm.NUTS(warmup_steps=100), n_chains=2, n_steps=300, seed=0)
    again = ebm.sample(model, ebm.NUTS(warmup_steps=100), n_chains=2, n_steps=300, seed=0)
    assert torch.equal(chains["x"], again["x"])
    draws = chains["x"].double()
    z = (draws.mean((0, 1)) - model.mean).abs() / mcse(draws)
    assert z.max() < z_threshold(2), z
    assert chains.stats["divergent"].shape == (300, 2)
