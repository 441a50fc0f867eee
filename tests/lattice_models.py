"""Small discrete energies without ``conditional()`` for the coloured Gibbs tests, and exact
joint distributions by enumeration."""

from __future__ import annotations

import torch

import ebm
from ebm.evaluation.enumeration import enumerate_states


class Ising(ebm.EnergyModel):
    """The README's Ising model (periodic L x L) with an optional field."""

    def __init__(self, L, beta, field=0.0):
        super().__init__(s=ebm.Spin(L, L))
        self.beta, self.field = beta, field

    def energy(self, state):
        s = state["s"]
        return -self.beta * (s * s.roll(1, -1) + s * s.roll(1, -2)).sum((-2, -1)) - self.field * s.sum((-2, -1))


class Potts(ebm.EnergyModel):
    """q-state Potts on a periodic L x L lattice, one-hot states, a field on category 0."""

    def __init__(self, q, L, beta, field=0.0):
        super().__init__(x=ebm.Categorical(q, L, L))
        self.beta, self.field = beta, field

    def energy(self, state):
        x = state["x"]
        same = (x * x.roll(1, -2) + x * x.roll(1, -3)).sum((-3, -2, -1))
        return -self.beta * same - self.field * x[..., 0].sum((-2, -1))


class PottsCodes(Potts):
    """The same Potts energy written with integer codes and ``==``: not differentiable."""

    def energy(self, state):
        c = state["x"].argmax(-1)
        same = ((c == c.roll(1, -1)).sum((-2, -1)) + (c == c.roll(1, -2)).sum((-2, -1))).to(state["x"].dtype)
        return -self.beta * same - self.field * (c == 0).sum((-2, -1)).to(state["x"].dtype)


class SpinGlass(ebm.EnergyModel):
    """Sparse random ±J couplings on ``n`` spins (edge probability ``p``) and random fields."""

    def __init__(self, n, p=0.3, beta=0.6, seed=0):
        super().__init__(s=ebm.Spin(n))
        g = torch.Generator().manual_seed(seed)
        edges = torch.triu(torch.rand(n, n, generator=g) < p, 1)
        signs = torch.where(torch.rand(n, n, generator=g) < 0.5, -1.0, 1.0)
        J = torch.where(edges, signs, 0.0)
        self.register_buffer("J", beta * (J + J.T))
        self.register_buffer("h", 0.3 * torch.randn(n, generator=g))

    def energy(self, state):
        s = state["s"]
        return -0.5 * ((s @ self.J) * s).sum(-1) - s @ self.h


class LateralBM(ebm.EnergyModel):
    """A Boltzmann machine with visible-visible couplings and hidden units, no conditional()."""

    def __init__(self, n_visible, n_hidden, seed=0, lateral=1.0):
        super().__init__(v=ebm.Binary(n_visible), h=ebm.Binary(n_hidden))
        g = torch.Generator().manual_seed(seed)
        L = lateral * torch.randn(n_visible, n_visible, generator=g)
        self.L = torch.nn.Parameter(torch.triu(L, 1) + torch.triu(L, 1).T)
        self.W = torch.nn.Parameter(torch.randn(n_visible, n_hidden, generator=g))
        self.a = torch.nn.Parameter(0.5 * torch.randn(n_visible, generator=g))
        self.b = torch.nn.Parameter(0.5 * torch.randn(n_hidden, generator=g))

    def energy(self, state):
        v, h = state["v"], state["h"]
        return -0.5 * ((v @ self.L) * v).sum(-1) - ((v @ self.W) * h).sum(-1) - v @ self.a - h @ self.b


class CurieWeiss(ebm.EnergyModel):
    """Mean-field Ising ``-(J/N)(Σ s)² - h Σ s``: complete graph, not affine in a site."""

    def __init__(self, n, J=1.0, field=0.1):
        super().__init__(s=ebm.Spin(n))
        self.n, self.J, self.field = n, J, field

    def energy(self, state):
        m = state["s"].sum(-1)
        return -self.J / self.n * m**2 - self.field * m


class ThreeBody(ebm.EnergyModel):
    """Three-spin plaquettes along the rows of a periodic grid plus pair terms down the columns."""

    def __init__(self, L, J3=0.7, J2=0.3, field=0.2):
        super().__init__(s=ebm.Spin(L, L))
        self.J3, self.J2, self.field = J3, J2, field

    def energy(self, state):
        s = state["s"]
        three = (s * s.roll(1, -1) * s.roll(2, -1)).sum((-2, -1))
        return -self.J3 * three - self.J2 * (s * s.roll(1, -2)).sum((-2, -1)) - self.field * s.sum((-2, -1))


def joint_probs(model, names):
    """Exact probabilities of every joint state of ``names``, in enumeration order."""
    with torch.no_grad():
        energies = torch.cat([model.energy(chunk) for chunk in enumerate_states(model, names)])
    return torch.softmax(-energies.double(), 0)


def joint_index(model, state, names):
    """Each row's index in ``enumerate_states`` order (mixed radix, first site least significant)."""
    digits, radices = [], []
    for k in names:
        domain = model.variables[k]
        x = state[k]
        if isinstance(domain, ebm.Categorical):
            d = x.argmax(-1).flatten(1)
        else:
            d = (x == domain.values[1]).long().flatten(1)
        digits.append(d)
        radices += [domain.n_values] * d.shape[1]
    digits = torch.cat(digits, 1)
    place = torch.cumprod(torch.tensor([1, *radices[:-1]]), 0)
    return (digits * place).sum(1)
