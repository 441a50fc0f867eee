import math

import pytest
import torch
from models import BoltzmannPair, Ising, all_states, random_rbm

import ebm


def test_variables_ordered_and_energy_shape():
    rbm = ebm.RBM(5, 3)
    assert list(rbm.variables) == ["v", "h"]
    assert rbm.variables["v"] == ebm.Binary(5)
    state = rbm.random_state(7)
    assert rbm.energy(state).shape == (7,)
    assert rbm.W.shape == (5, 3) and rbm.a.shape == (5,) and rbm.b.shape == (3,)


def test_energy_matches_eq6_by_hand():
    rbm = random_rbm(4, 3)
    v, h = all_states(4)[5:6], all_states(3)[6:7]
    by_hand = (
        -(rbm.a * v).sum() - (rbm.b * h).sum() - sum(v[0, i] * rbm.W[i, j] * h[0, j] for i in range(4) for j in range(3))
    )
    assert torch.allclose(rbm.energy({"v": v, "h": h}), by_hand.reshape(1))


def test_conditionals_equal_ratios_of_boltzmann_weights():
    rbm = random_rbm(4, 3)
    V, H = all_states(4), all_states(3)
    # E[i, j] for visible state i and hidden state j
    E = torch.stack([rbm.energy({"v": V, "h": h.expand(len(V), 3)}) for h in H], 1)
    p_joint = torch.softmax(-E.flatten(), 0).reshape(E.shape)
    with torch.no_grad():
        p_h_given_v = rbm.conditional("h", {"v": V}).probs  # (16, 3)
        p_v_given_h = rbm.conditional("v", {"h": H}).probs  # (8, 4)
    exact_h = (p_joint / p_joint.sum(1, keepdim=True)) @ H
    exact_v = (p_joint / p_joint.sum(0, keepdim=True)).T @ V
    assert torch.allclose(p_h_given_v, exact_h, atol=1e-12)
    assert torch.allclose(p_v_given_h, exact_v, atol=1e-12)


def test_free_energies_equal_log_sums():
    rbm = random_rbm(4, 3)
    V, H = all_states(4), all_states(3)
    E = torch.stack([rbm.energy({"v": V, "h": h.expand(len(V), 3)}) for h in H], 1)
    with torch.no_grad():
        assert torch.allclose(rbm.free_energy({"v": V}), -torch.logsumexp(-E, 1), atol=1e-12)
        assert torch.allclose(rbm.free_energy({"h": H}), -torch.logsumexp(-E, 0), atol=1e-12)
    with pytest.raises(NotImplementedError):
        rbm.free_energy({"v": V[:1], "h": H[:1]})


@pytest.mark.parametrize("n_visible, n_hidden", [(4, 3), (3, 5)])
def test_exact_log_z_equals_brute_force(n_visible, n_hidden):
    rbm = random_rbm(n_visible, n_hidden)
    V, H = all_states(n_visible), all_states(n_hidden)
    brute = torch.logsumexp(torch.stack([-rbm.energy({"v": V, "h": h.expand(len(V), n_hidden)}) for h in H]).flatten(), 0)
    log_z = ebm.log_partition(rbm)
    assert isinstance(log_z, float) and log_z.stderr == 0.0
    assert math.isclose(log_z, brute.item(), rel_tol=0, abs_tol=1e-10)
    # the generic path (no free energy: full enumeration) agrees
    pair = BoltzmannPair(n_visible, n_hidden)
    pair.load_state_dict(rbm.state_dict())
    assert math.isclose(ebm.log_partition(pair), brute.item(), abs_tol=1e-10)


def test_exact_log_z_of_user_ising_by_itertools():
    model = Ising(3, 0.3, field=0.1)
    energies = []
    for k in range(2**9):
        s = torch.tensor([1.0 if (k >> i) & 1 else -1.0 for i in range(9)]).reshape(1, 3, 3)
        energies.append(-model.energy({"s": s}))
    assert math.isclose(ebm.log_partition(model), torch.logsumexp(torch.cat(energies), 0).item(), abs_tol=1e-5)


def test_log_likelihood_normalises_and_generic_path_agrees():
    rbm = random_rbm(5, 3)
    V = all_states(5)
    ll = ebm.log_likelihood(rbm, {"v": V})
    assert ll.shape == (32,)
    assert math.isclose(torch.logsumexp(ll, 0).item(), 0.0, abs_tol=1e-10)
    pair = BoltzmannPair(5, 3)
    pair.load_state_dict(rbm.state_dict())
    assert torch.allclose(ebm.log_likelihood(pair, {"v": V}), ll, atol=1e-10)
    # a given log Z is used as is
    assert torch.allclose(ebm.log_likelihood(rbm, {"v": V}, log_z=0.0), -rbm.free_energy({"v": V}).detach())


def test_large_state_space_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot enumerate"):
        ebm.log_partition(ebm.RBM(40, 30))
    with pytest.raises(ValueError, match="ais"):
        ebm.log_partition(Ising(8, 0.3))
    with pytest.raises(ValueError, match="unknown method"):
        ebm.log_partition(ebm.RBM(3, 2), method="magic")


def test_rbm_exact_log_z_enumerates_smaller_layer():
    rbm = ebm.RBM(200, 12, seed=0)
    log_z = ebm.log_partition(rbm)
    assert log_z.info["enumerated"] == ["h"]
    assert math.isfinite(log_z)


def test_init_visible_bias_is_clipped_log_odds():
    rbm = ebm.RBM(3, 2)
    X = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    rbm.init_visible_bias(X, eps=0.01)
    assert torch.allclose(rbm.a, torch.tensor([math.log(99), -math.log(99), 0.0]), atol=1e-5)


@pytest.mark.parametrize(
    ("state", "error", "match"),
    [
        ({"v": torch.zeros(4, 5)}, ValueError, "missing block"),
        ({"v": torch.zeros(4, 5), "h": torch.zeros(4, 3), "z": torch.zeros(4, 1)}, ValueError, "unknown block"),
        ({"v": torch.zeros(4, 6), "h": torch.zeros(4, 3)}, ValueError, r"shape \(batch, 5\)"),
        ({"v": torch.zeros(5), "h": torch.zeros(4, 3)}, ValueError, r"shape \(batch, 5\)"),
        ({"v": torch.zeros(4, 5), "h": torch.zeros(3, 3)}, ValueError, "different batch sizes"),
        ({"v": torch.zeros(4, 5, dtype=torch.float64), "h": torch.zeros(4, 3)}, TypeError, "dtype"),
        ({"v": torch.zeros(4, 5, device="meta"), "h": torch.zeros(4, 3)}, ValueError, "is on meta"),
        ({"v": torch.full((4, 5), 0.5), "h": torch.zeros(4, 3)}, ValueError, "'v' is Binary"),
        ({"v": torch.zeros(4, 5), "h": torch.tensor([[0.0, 1.0, float("inf")]] * 4)}, ValueError, "'h' contains inf"),
        ({"v": torch.eye(4, 5).neg(), "h": torch.zeros(4, 3)}, ValueError, "'v' is Binary .* found -1"),
        ({"v": [[0.0] * 5], "h": torch.zeros(1, 3)}, TypeError, "must be a torch.Tensor"),
    ],
)
def test_bad_states_give_clear_errors(state, error, match):
    with pytest.raises(error, match=match):
        ebm.RBM(5, 3).check_state(state)


def test_bad_data_for_evaluation_and_sampling():
    rbm = ebm.RBM(5, 3)
    nan = torch.zeros(2, 5)
    nan[1, 2] = float("nan")
    with pytest.raises(ValueError, match="'v' contains NaN"):
        ebm.log_likelihood(rbm, {"v": nan})
    with pytest.raises(ValueError, match="'v' is Binary"):
        ebm.sample(rbm, ebm.Gibbs(), n_steps=1, observed={"v": torch.full((2, 5), 2.0)})
    with pytest.raises(ValueError, match="non-empty dict"):
        ebm.log_likelihood(rbm, {})


def test_blocks_must_be_domains():
    class Broken(ebm.EnergyModel):
        def __init__(self):
            super().__init__(s=3)

    with pytest.raises(TypeError, match="block 's' must be an ebm domain"):
        Broken()
    with pytest.raises(ValueError, match="at least one block"):
        ebm.EnergyModel()


def test_config_is_recorded_for_save_and_load(tmp_path):
    model = Ising(3, 0.25, field=0.5)
    assert model.config == {"L": 3, "beta": 0.25, "field": 0.5, "shape": None}
    rbm = ebm.RBM(6, 2, init_std=0.1, seed=3)
    rbm.save(tmp_path / "rbm.pt")
    loaded = ebm.load(tmp_path / "rbm.pt")
    assert loaded.config == rbm.config
    assert all(torch.equal(p, q) for p, q in zip(rbm.parameters(), loaded.parameters(), strict=True))
