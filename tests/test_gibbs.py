"""Block Gibbs draws match exactly enumerated distributions (chi-square with pooled small cells)."""

import pytest
import torch
from models import BoltzmannPair, Ising, SpinPair, all_states, random_rbm
from stattools import chi_square_pvalue, state_index

import ebm

# Fixed seeds make these deterministic; at this level a correct sampler fails 1 in 10^4 seeds,
# while a wrong conditional or update order gives p-values of 1e-50 and below.
ALPHA = 1e-4


def joint_probs(model, names):
    """Exact probabilities of every joint state of ``names`` in enumeration order."""
    bits = sum(model.variables[k].size for k in names)
    states = all_states(bits)
    parts, offset = {}, 0
    for k in names:
        size = model.variables[k].size
        parts[k] = (
            model.variables[k]
            .from_bits(states[:, offset : offset + size], dtype=model.dtype)
            .reshape(-1, *model.variables[k].shape)
        )
        offset += size
    with torch.no_grad():
        return torch.softmax(-model.energy(parts), 0)


def empirical_counts(chains, names, n_states):
    bits = torch.cat([(chains[k][-1] > 0).flatten(1) for k in names], 1)  # "up" is the positive value
    return torch.bincount(state_index(bits), minlength=n_states)


@pytest.mark.parametrize(
    "model",
    [random_rbm(4, 3, scale=1.0), BoltzmannPair(3, 3), SpinPair(3, 3)],
    ids=["rbm-conditionals", "user-energy-sitewise", "spin-conditionals"],
)
def test_joint_matches_exact_distribution(model):
    names = list(model.variables)
    n_states = 2 ** sum(model.variables[k].size for k in names)
    # chains are independent, so the last states are an iid sample once burned in
    chains = ebm.sample(model, ebm.Gibbs(), n_chains=20_000, n_steps=1, burn_in=30, seed=1)
    counts = empirical_counts(chains, names, n_states)
    assert chi_square_pvalue(counts, joint_probs(model, names)) > ALPHA


def test_user_ising_through_sitewise_fallback():
    model = Ising(3, 0.35, field=0.2).double()
    chains = ebm.sample(model, ebm.Gibbs(), n_chains=20_000, n_steps=1, burn_in=30, seed=2)
    assert set(chains["s"].unique().tolist()) == {-1.0, 1.0}
    counts = empirical_counts(chains, ["s"], 2**9)
    assert chi_square_pvalue(counts, joint_probs(model, ["s"])) > ALPHA


def test_chi_square_detects_a_wrong_sampler():
    """The test above has power: draws from the wrong temperature are rejected."""
    model = random_rbm(4, 3)
    hot = random_rbm(4, 3)
    with torch.no_grad():
        for p in hot.parameters():
            p.mul_(0.8)
    chains = ebm.sample(hot, ebm.Gibbs(), n_chains=20_000, n_steps=1, burn_in=30, seed=1)
    counts = empirical_counts(chains, ["v", "h"], 2**7)
    assert chi_square_pvalue(counts, joint_probs(model, ["v", "h"])) < ALPHA


def test_clamped_hidden_draws_match_exact_conditional():
    rbm = random_rbm(6, 4)
    V = all_states(6)[::5]  # 13 data rows
    chains = ebm.sample(rbm, ebm.Gibbs(), n_steps=4000, observed={"v": V}, seed=3)
    # chains["v"] is rebuilt from the input: the sampler's own final state is what can drift
    assert torch.equal(chains.sampler_state.state["v"], V) and torch.equal(chains.last["v"], V)
    # h | v is redrawn exactly each step, so the draws are iid Bernoulli(p)
    p = rbm.conditional("h", {"v": V}).probs.detach()
    mean = chains["h"].mean(0)
    z = (mean - p) / (p * (1 - p) / chains.n_draws).sqrt()
    assert z.abs().max() < 4.5  # 52 coordinates: P(max |z| > 4.5) < 52 * 6.8e-6


def test_gibbs_rejects_continuous_block_without_conditional():
    class Blob(ebm.EnergyModel):
        def __init__(self):
            super().__init__(x=ebm.Real(2))
            self.w = torch.nn.Parameter(torch.ones(2))

        def energy(self, state):
            return (state["x"] ** 2 * self.w).sum(-1)

    with pytest.raises(TypeError, match="Langevin"):
        ebm.sample(Blob(), ebm.Gibbs(), n_chains=3, n_steps=1)
