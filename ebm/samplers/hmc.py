"""Hamiltonian Monte Carlo with a diagonal mass matrix, batched over chains."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from ebm.samplers.gradient import GradientSampler, GradientState, energy_and_grad, finite_rows, select

#: an energy error (nats) above which a trajectory counts as divergent, as in Stan and Pyro
MAX_ENERGY_ERROR = 1000.0

Potential = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def leapfrog(
    potential: Potential,
    position: torch.Tensor,
    momentum: torch.Tensor,
    grad: torch.Tensor,
    step_size: torch.Tensor | float,
    inv_mass: torch.Tensor | float,
    n_steps: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n_steps`` leapfrog (velocity Verlet) steps of ``H(x, p) = E(x) + ½ pᵀ M⁻¹ p``.

    Args:
        potential: ``x -> (E(x), ∂E/∂x)`` with shapes ``(n_chains,)`` and ``(n_chains, D)``.
        position, momentum, grad: ``(n_chains, D)``; ``grad`` is ``∂E/∂x`` at ``position``.
        step_size: ``ε``, broadcastable to ``(n_chains, 1)``.
        inv_mass: diagonal ``M⁻¹``, broadcastable to ``(n_chains, D)``.
        n_steps: number of leapfrog steps.

    Returns:
        ``(position, momentum, energy, grad)`` at the end of the trajectory. The map is
        volume-preserving and reversible: negating the final momentum and integrating again
        returns to the start, up to rounding.
    """
    half = 0.5 * step_size
    velocity_scale = step_size * inv_mass
    p = momentum - half * grad
    x = position
    energy = None
    for i in range(n_steps):
        x = torch.addcmul(x, velocity_scale, p)
        energy, grad = potential(x)
        p = p - (half if i == n_steps - 1 else step_size) * grad
    return x, p, energy, grad


class HMC(GradientSampler):
    """Hamiltonian Monte Carlo on the latent ``Real`` blocks, all chains batched on dim 0.

    Each step draws a momentum ``p ~ N(0, M)`` (``M`` diagonal), runs ``n_leapfrog``
    leapfrog steps of size ``ε`` (``leapfrog``) and accepts the end point with probability
    ``min(1, exp(−ΔH))``, ``ΔH = H(x', p') − H(x, p)`` (nats).

    During burn-in (``ebm.sample(..., burn_in=...)``) ``ε`` is tuned by dual averaging
    towards ``target_accept`` and the diagonal inverse mass ``M⁻¹`` from the burn-in draws;
    both are on by default and shared by all chains (``per_chain=True``: one per chain).
    Trajectories with a NaN/inf energy or gradient, or ``ΔH > 1000``, are divergent: they
    are rejected and flagged in ``info["divergent"]``.

    Args:
        step_size: initial leapfrog step ``ε``.
        n_leapfrog: leapfrog steps per trajectory (one gradient evaluation each).
        jitter: each chain's step size is drawn uniformly from ``ε (1 ± jitter)`` at every
            step (Neal 2011, section 5.4.2.2). A fixed ``ε n_leapfrog`` can be close to a
            period of the target's dynamics, which makes draws nearly repeat and acceptance
            a ragged function of ``ε``; randomising it removes both. 0 turns it off.
        adapt_step_size, adapt_mass, per_chain, mass_estimator: warm-up tuning; see
            ``ebm.samplers.adaptation``.
        target_accept: default 0.65 (Beskos et al. 2013).
        blocks: the blocks to update (default: all non-observed ones).

    Info per step, each ``(n_chains,)``: ``accept_prob``, ``accepted``, ``energy_error``
    (``ΔH``), ``divergent``, ``energy``, ``step_size``.
    """

    target_accept = 0.65

    def __init__(
        self,
        step_size: float = 0.1,
        n_leapfrog: int = 10,
        *,
        jitter: float = 0.2,
        adapt_step_size: bool = True,
        adapt_mass: bool = True,
        per_chain: bool = False,
        mass_estimator: str = "gradient",
        target_accept: float | None = None,
        blocks: Iterable[str] | None = None,
    ):
        if not isinstance(n_leapfrog, int) or n_leapfrog < 1:
            raise ValueError(f"n_leapfrog must be a positive integer, got {n_leapfrog!r}")
        super().__init__(
            step_size,
            adapt_step_size=adapt_step_size,
            adapt_mass=adapt_mass,
            per_chain=per_chain,
            mass_estimator=mass_estimator,
            target_accept=target_accept,
            blocks=blocks,
        )
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must lie in [0, 1), got {jitter!r}")
        self.n_leapfrog = n_leapfrog
        self.jitter = float(jitter)

    def transition(self, model, s: GradientState, generator):
        x, energy, grad = s.position, s.energy, s.grad
        noise = self.normal(x, generator)
        momentum = noise / s.inv_mass.sqrt()
        step_size = s.step_size
        if self.jitter:
            u = torch.rand((x.shape[0], 1), generator=generator, dtype=x.dtype, device=x.device)
            step_size = step_size * (1 + self.jitter * (2 * u - 1))

        def potential(position):
            return energy_and_grad(model, s.layout, s.state, position)

        new_x, new_p, new_energy, new_grad = leapfrog(potential, x, momentum, grad, step_size, s.inv_mass, self.n_leapfrog)
        kinetic_change = 0.5 * ((new_p.square() * s.inv_mass).sum(-1) - noise.square().sum(-1))
        energy_error = new_energy - energy + kinetic_change
        finite = finite_rows(new_energy, new_grad)
        accept_prob, accepted = self.metropolis_accept(-energy_error, finite, generator)
        info = {
            "accept_prob": accept_prob,
            "accepted": accepted,
            "energy_error": energy_error,
            "divergent": ~finite | (energy_error > MAX_ENERGY_ERROR),
        }
        return select(accepted, new_x, x), select(accepted, new_energy, energy), select(accepted, new_grad, grad), info
