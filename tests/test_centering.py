"""Centered RBM (Melchior, Fischer & Wiskott 2016): same distribution as the plain RBM,
the centered gradient from autograd, offsets that move without changing the model."""

import math
from types import SimpleNamespace

import pytest
import torch

import ebm
import ebm.datasets

pytestmark = pytest.mark.usefixtures("one_thread")


def random_centered(n_visible=6, n_hidden=4, seed=0):
    rbm = ebm.CenteredRBM(n_visible, n_hidden, seed=seed).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in (rbm.W, rbm.a, rbm.b):
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
        rbm.mu.copy_(torch.rand(n_visible, generator=g, dtype=torch.float64))
        rbm.lam.copy_(torch.rand(n_hidden, generator=g, dtype=torch.float64))
    return rbm


def all_visible(n):
    return torch.tensor([[(k >> i) & 1 for i in range(n)] for k in range(2**n)], dtype=torch.float64)


def test_centered_rbm_is_the_plain_rbm_with_shifted_biases():
    rbm = random_centered()
    plain = rbm.to_rbm()
    v = all_visible(6)
    assert torch.allclose(ebm.log_likelihood(rbm, {"v": v}), ebm.log_likelihood(plain, {"v": v}))
    state = ebm.sample(rbm, ebm.Gibbs(), n_chains=7, n_steps=1, seed=0).last
    shift = rbm.energy(state) - plain.energy(state)
    c = (rbm.a @ rbm.mu + rbm.b @ rbm.lam - rbm.mu @ rbm.W @ rbm.lam).item()
    assert torch.allclose(shift, torch.full_like(shift, c))
    assert float(ebm.log_partition(rbm)) == pytest.approx(float(ebm.log_partition(plain)) - c)
    # free energies of both blocks agree with the enumeration of the other block
    h = all_visible(4)
    brute = torch.stack([-torch.logsumexp(-rbm.energy({"v": row.expand(16, 6), "h": h}), 0) for row in v[:5]])
    assert torch.allclose(rbm.free_energy({"v": v[:5]}), brute)
    brute_h = torch.stack([-torch.logsumexp(-rbm.energy({"v": v, "h": row.expand(64, 4)}), 0) for row in h[:5]])
    assert torch.allclose(rbm.free_energy({"h": h[:5]}), brute_h)


def test_recenter_leaves_the_distribution_unchanged():
    rbm = random_centered(seed=3)
    v = all_visible(6)
    before = ebm.log_likelihood(rbm, {"v": v})
    rbm.recenter(mu=torch.rand(6, dtype=torch.float64), lam=torch.rand(4, dtype=torch.float64))
    assert torch.allclose(ebm.log_likelihood(rbm, {"v": v}), before)


def test_autograd_gives_the_centered_gradient():
    rbm = random_centered(seed=4)
    v = (torch.rand(9, 6, generator=torch.Generator().manual_seed(0)) < 0.5).double()
    rbm.free_energy({"v": v}).sum().backward()
    p_h = torch.sigmoid((v - rbm.mu) @ rbm.W + rbm.b).detach()
    vc, hc = v - rbm.mu, p_h - rbm.lam
    assert torch.allclose(rbm.W.grad, -(vc.T @ hc))
    assert torch.allclose(rbm.a.grad, -vc.sum(0))
    assert torch.allclose(rbm.b.grad, -hc.sum(0))


def test_centering_callback_moves_offsets_by_the_rate_and_keeps_the_model():
    rbm = random_centered(seed=5)
    v = all_visible(6)
    before = ebm.log_likelihood(rbm, {"v": v})
    batch = (torch.rand(20, 6, generator=torch.Generator().manual_seed(1)) < 0.7).double()
    mu, lam = rbm.mu.clone(), rbm.lam.clone()
    target_lam = torch.sigmoid(rbm.hidden_logits(batch)).mean(0).detach()
    ebm.Centering(rate=0.25).on_batch_end(SimpleNamespace(model=rbm), {"v": batch}, {})
    assert torch.allclose(rbm.mu, mu + 0.25 * (batch.mean(0) - mu))
    assert torch.allclose(rbm.lam, lam + 0.25 * (target_lam - lam))
    assert torch.allclose(ebm.log_likelihood(rbm, {"v": v}), before)


def test_centered_training_improves_the_likelihood_and_tracks_the_data_mean():
    x, _ = ebm.datasets.digits(dtype=torch.float64)
    rbm = ebm.CenteredRBM(64, 10, seed=0).double()
    history = ebm.fit(
        rbm,
        {"v": x},
        epochs=3,
        batch_size=20,
        lr=0.05,
        callbacks=[ebm.Centering(rate=0.05)],
        metrics=["log_likelihood"],
        progress=False,
    )
    baseline = ebm.RBM(64, 10, seed=0).double()
    baseline.init_visible_bias(x)
    assert history["log_likelihood"][-1] > ebm.log_likelihood(baseline, {"v": x}).mean().item() + 1.0
    # μ is a moving average of batch means of x: within a few batch standard errors of the mean
    se = (x.std(0) / 20**0.5).max().item()
    assert (rbm.mu - x.mean(0).clamp(1e-3, 1 - 1e-3)).abs().max().item() < 4 * se


def test_ais_on_a_centered_rbm_matches_exact_log_z():
    rbm = random_centered(10, 5, seed=6)
    exact = ebm.log_partition(rbm)
    estimate = ebm.log_partition(rbm, method="ais", n_betas=500, n_runs=100, seed=0)
    assert abs(float(estimate) - float(exact)) < 3 * estimate.stderr


def test_centered_rbm_saves_its_offsets(tmp_path):
    rbm = random_centered(seed=7)
    rbm.save(tmp_path / "c.pt")
    loaded = ebm.load(tmp_path / "c.pt")
    assert isinstance(loaded, ebm.CenteredRBM)
    assert torch.equal(loaded.mu, rbm.mu) and torch.equal(loaded.lam, rbm.lam)


def test_centering_needs_a_centered_model():
    x, _ = ebm.datasets.digits()
    with pytest.raises(TypeError, match="CenteredRBM"):
        ebm.fit(ebm.RBM(64, 4), {"v": x}, epochs=1, callbacks=[ebm.Centering()], metrics=None, progress=False)
    with pytest.raises(ValueError, match="rate"):
        ebm.Centering(rate=0.0)


def test_the_trainers_centred_update_of_a_plain_rbm_is_the_centred_rbms_step():
    """``centering=True`` on a plain RBM takes the steps (Adam, a clipped gradient) of the
    ``CenteredRBM`` with offsets μ = data mean, λ = ½ started from the same distribution:
    after training both are the same plain RBM (float64, round-off)."""
    data = {"v": ebm.datasets.digits()[0][:40].double()}  # pixel means far from ½
    plain = random_centered(64, 5, seed=6).to_rbm()
    centred = ebm.CenteredRBM(64, 5).double()
    with torch.no_grad():
        centred.mu.copy_(data["v"].mean(0))
        centred.lam.fill_(0.5)
        centred.W.copy_(plain.W)
        centred.a.copy_(plain.a + plain.W @ centred.lam)
        centred.b.copy_(plain.b + centred.mu @ plain.W)
    options = dict(epochs=3, batch_size=8, n_chains=8, lr=0.05, clip_grad=1.0, seed=2, metrics=None, init_bias=False)
    ebm.fit(plain, data, centering=True, **options)
    ebm.fit(centred, data, centering=False, **options)
    back = centred.to_rbm()
    for name in ("W", "a", "b"):
        moved = (getattr(plain, name) - getattr(random_centered(64, 5, seed=6).to_rbm(), name)).abs().max()
        assert moved > 0.05, name  # training moved it: the comparison is not of two starts
        assert torch.allclose(getattr(plain, name), getattr(back, name), rtol=0, atol=1e-10), name


def test_centering_is_on_by_default_only_for_a_plain_rbm_with_the_trainers_own_optimizer():
    rbm = ebm.RBM(6, 3)
    assert ebm.Trainer(rbm).centering is True
    assert ebm.Trainer(rbm, optimizer="sgd").centering is True
    assert ebm.Trainer(rbm, optimizer=torch.optim.SGD(rbm.parameters(), lr=0.1)).centering is False
    assert ebm.Trainer(rbm, centering=False).centering is False
    assert ebm.Trainer(ebm.CenteredRBM(6, 3)).centering is False
    assert ebm.Trainer(ebm.GaussianRBM(2, 3)).centering is False

    # lr=None: the centred update's step shrinks with the model, 0.01 without it
    def lr(trainer):
        return trainer.optimizer.param_groups[0]["lr"]

    assert lr(ebm.Trainer(ebm.RBM(64, 16))) == pytest.approx(0.03)
    assert lr(ebm.Trainer(ebm.RBM(6, 3))) == pytest.approx(0.03)
    assert lr(ebm.Trainer(ebm.RBM(784, 500))) == pytest.approx(0.96 / math.sqrt(784 * 500))
    assert lr(ebm.Trainer(ebm.RBM(784, 500), centering=False)) == 0.01
    assert lr(ebm.Trainer(ebm.CenteredRBM(784, 500))) == 0.01
    assert lr(ebm.Trainer(ebm.RBM(784, 500), lr=0.2)) == 0.2
    with pytest.raises(ValueError, match=r"centering=True needs a plain ebm\.RBM"):
        ebm.Trainer(ebm.CenteredRBM(6, 3), centering=True)
    with pytest.raises(ValueError, match="centering must be 'auto', True or False"):
        ebm.Trainer(rbm, centering="yes")
