"""The surrogate of eq. 16: its autograd gradient is eq. 8 and the exact KL gradient (eq. 4/5)."""

import pytest
import torch

import ebm
from ebm.evaluation.enumeration import enumerate_states
from ebm.training.objective import data_phase, surrogate, uses_free_energy

# many tiny ops: thread contention on the shared 2-core machine only slows them
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny():
    """A 4x3 RBM in float64 with non-trivial parameters, and 6 data rows (one repeated)."""
    torch.manual_seed(0)
    rbm = ebm.RBM(4, 3, init_std=0.7, seed=1).double()
    with torch.no_grad():
        rbm.a.copy_(torch.tensor([0.3, -0.5, 0.1, 0.8], dtype=torch.float64))
        rbm.b.copy_(torch.tensor([-0.2, 0.4, 0.6], dtype=torch.float64))
    v = torch.tensor(
        [[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1], [1, 0, 1, 1], [1, 1, 1, 0]], dtype=torch.float64
    )
    return rbm, v


def joint(rbm):
    """Every (v, h) state and its exact probability p(v, h) (eq. 2)."""
    states = next(enumerate_states(rbm, ["v", "h"]))
    with torch.no_grad():
        p = torch.softmax(-rbm.energy(states), 0)
    return states, p


def visible_marginal(rbm):
    """Every v state and its exact marginal p(v)."""
    states = next(enumerate_states(rbm, ["v"]))
    with torch.no_grad():
        p = torch.softmax(-rbm.free_energy(states), 0)
    return states, p


def grads(rbm, loss):
    rbm.zero_grad()
    loss.backward()
    return {name: p.grad.clone() for name, p in rbm.named_parameters()}


def eq8(rbm, v):
    """Eq. 8 written out: model moments minus data moments, h given v by eq. 14."""
    states, p = joint(rbm)
    with torch.no_grad():
        h_data = torch.sigmoid(v @ rbm.W + rbm.b)
        vm, hm = states["v"], states["h"]
        return {
            "W": (p[:, None, None] * vm[:, :, None] * hm[:, None, :]).sum(0) - v.T @ h_data / len(v),
            "a": (p[:, None] * vm).sum(0) - v.mean(0),
            "b": (p[:, None] * hm).sum(0) - h_data.mean(0),
        }


def kl_gradient_fd(rbm, v, eps=1e-6):
    """Central finite differences of the exact KL(p_data || p_model(v)) of eq. 5 (marginal over v).

    KL = Σ p_data log p_data − mean over data rows of log p_model(v); the first term does not
    depend on the parameters. Truncation error is O(eps²), round-off O(1e-16 / eps).
    """
    out = {}
    with torch.no_grad():
        for name, param in rbm.named_parameters():
            g = torch.zeros_like(param)
            flat, gflat = param.view(-1), g.view(-1)
            for i in range(flat.numel()):
                old = flat[i].item()
                flat[i] = old + eps
                up = -ebm.log_likelihood(rbm, {"v": v}).mean()
                flat[i] = old - eps
                down = -ebm.log_likelihood(rbm, {"v": v}).mean()
                flat[i] = old
                gflat[i] = (up - down) / (2 * eps)
            out[name] = g
    return out


def test_uses_free_energy(tiny):
    rbm, _ = tiny
    assert uses_free_energy(rbm, ["v"])
    assert not uses_free_energy(rbm, ["v", "h"])


@pytest.mark.parametrize("rao_blackwell_negatives", [False, True])
def test_surrogate_gradient_is_eq8(tiny, rao_blackwell_negatives):
    rbm, v = tiny
    if rao_blackwell_negatives:
        negatives, weight = visible_marginal(rbm)
    else:
        negatives, weight = joint(rbm)
    loss = surrogate(rbm, {"v": v}, negatives, model_weight=weight, free_energy_negatives=rao_blackwell_negatives)
    got = grads(rbm, loss)
    expected = eq8(rbm, v)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-12)


def test_surrogate_gradient_with_sampled_latents_in_expectation(tiny):
    """The generic path (data phase with latents, no free energy) weighted by p(h | v) is eq. 8."""
    rbm, v = tiny
    hs = next(enumerate_states(rbm, ["h"]))["h"]
    vv = v.repeat_interleave(len(hs), 0)
    hh = hs.repeat(len(v), 1)
    with torch.no_grad():
        p_h = torch.distributions.Bernoulli(logits=rbm.hidden_logits(vv)).log_prob(hh).sum(1).exp()
    negatives, weight = joint(rbm)
    loss = surrogate(rbm, {"v": vv, "h": hh}, negatives, data_weight=p_h, model_weight=weight)
    got = grads(rbm, loss)
    for name, g in eq8(rbm, v).items():
        torch.testing.assert_close(got[name], g, rtol=0, atol=1e-12)


def test_surrogate_gradient_equals_finite_difference_kl(tiny):
    rbm, v = tiny
    negatives, weight = joint(rbm)
    got = grads(rbm, surrogate(rbm, {"v": v}, negatives, model_weight=weight))
    fd = kl_gradient_fd(rbm, v)
    for name in fd:
        torch.testing.assert_close(got[name], fd[name], rtol=0, atol=1e-7)


def test_second_order_gradient_is_not_the_kl_hessian(tiny):
    """As documented: with the samples held fixed the surrogate is linear in the visible bias,
    so its gradient there does not move when ``a`` moves (zero curvature), while the exact
    KL gradient moves by about ``Cov_model(v) · δ``."""
    rbm, v = tiny
    negatives, weight = joint(rbm)
    before = grads(rbm, surrogate(rbm, {"v": v}, negatives, model_weight=weight))["a"]
    with torch.no_grad():
        rbm.a += 0.1
    after = grads(rbm, surrogate(rbm, {"v": v}, negatives, model_weight=weight))["a"]
    assert torch.equal(after, before)
    assert (eq8(rbm, v)["a"] - before).abs().max() > 1e-3


def test_data_phase_sums_out_or_samples_latents(tiny):
    rbm, v = tiny
    g = torch.Generator().manual_seed(0)
    summed = data_phase(rbm, ebm.Gibbs(), {"v": v}, 1, g, sum_latents=True)
    assert list(summed) == ["v"]
    sampled = data_phase(rbm, ebm.Gibbs(), {"v": v}, 1, g, sum_latents=False)
    assert set(sampled) == {"v", "h"}
    assert torch.equal(sampled["v"], v)
    assert sampled["h"].shape == (len(v), 3)
    assert ((sampled["h"] == 0) | (sampled["h"] == 1)).all()


def test_energy_l2_penalty_adds_mean_squared_energies(tiny):
    rbm, v = tiny
    negatives, _ = joint(rbm)
    plain = surrogate(rbm, {"v": v}, negatives)
    penalised = surrogate(rbm, {"v": v}, negatives, energy_l2=0.5)
    with torch.no_grad():
        extra = 0.5 * (rbm.free_energy({"v": v}).square().mean() + rbm.energy(negatives).square().mean())
    torch.testing.assert_close(penalised - plain, extra)
