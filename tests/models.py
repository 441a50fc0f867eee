"""Small models shared by the tests."""

from __future__ import annotations

import torch

import ebm


class Ising(ebm.EnergyModel):
    """The DESIGN.md Ising energy, written as a user would (no conditional, no free energy)."""

    def __init__(self, L, beta, field=0.0, shape=None):
        super().__init__(s=ebm.Spin(*(shape or (L, L))))
        self.beta = beta
        self.field = field

    def energy(self, state):
        s = state["s"]
        return -self.beta * (s * s.roll(1, -1) + s * s.roll(1, -2)).sum((-2, -1)) - self.field * s.sum((-2, -1))


class BoltzmannPair(ebm.EnergyModel):
    """An RBM energy over Binary v and h written without conditional() or free_energy(),
    so every shortcut falls back to the generic path."""

    def __init__(self, n_visible, n_hidden, seed=0):
        super().__init__(v=ebm.Binary(n_visible), h=ebm.Binary(n_hidden))
        g = torch.Generator().manual_seed(seed)
        self.W = torch.nn.Parameter(torch.randn(n_visible, n_hidden, generator=g, dtype=torch.float64))
        self.a = torch.nn.Parameter(torch.randn(n_visible, generator=g, dtype=torch.float64) * 0.5)
        self.b = torch.nn.Parameter(torch.randn(n_hidden, generator=g, dtype=torch.float64) * 0.5)

    def energy(self, state):
        v, h = state["v"], state["h"]
        return -(v @ self.a) - (h @ self.b) - ((v @ self.W) * h).sum(-1)


class SpinPair(ebm.EnergyModel):
    """Two coupled spin blocks with closed-form conditionals (Bernoulli over +1)."""

    def __init__(self, n, m, seed=0):
        super().__init__(s=ebm.Spin(n), t=ebm.Spin(m))
        g = torch.Generator().manual_seed(seed)
        self.J = torch.nn.Parameter(torch.randn(n, m, generator=g, dtype=torch.float64) * 0.7)

    def energy(self, state):
        return -((state["s"] @ self.J) * state["t"]).sum(-1)

    def conditional(self, name, state):
        field = state["s"] @ self.J if name == "t" else state["t"] @ self.J.T
        return torch.distributions.Bernoulli(logits=2 * field)


def random_rbm(n_visible, n_hidden, scale=1.0, seed=0):
    """A float64 RBM with weights large enough that the distribution is far from uniform."""
    rbm = ebm.RBM(n_visible, n_hidden, seed=seed).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        rbm.W.copy_(torch.randn(n_visible, n_hidden, generator=g, dtype=torch.float64) * scale)
        rbm.a.copy_(torch.randn(n_visible, generator=g, dtype=torch.float64) * scale * 0.5)
        rbm.b.copy_(torch.randn(n_hidden, generator=g, dtype=torch.float64) * scale * 0.5)
    return rbm


def all_states(n):
    """All 2**n binary vectors as rows, in enumeration order (bit i of row k is bit i of k)."""
    k = torch.arange(2**n)
    return ((k.unsqueeze(1) >> torch.arange(n)) & 1).double()
