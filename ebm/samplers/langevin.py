"""Langevin samplers: MALA (Metropolis-adjusted) and ULA (unadjusted), one proposal for both."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ebm.samplers.gradient import (
    MAX_ENERGY_ERROR,
    GradientSampler,
    GradientState,
    energy_and_grad,
    finite_rows,
    select,
)


class Langevin(GradientSampler):
    """Langevin dynamics on the latent ``Real`` blocks, batched over chains.

    The proposal is one Euler step of the Langevin diffusion with diagonal inverse mass
    ``M⁻¹`` (a per-coordinate variance scale) and step size ``τ``::

        x' = x − τ M⁻¹ ∂E/∂x + s · sqrt(2τ M⁻¹) ξ,     ξ ~ N(0, I)

    With ``metropolis=True`` (MALA) it is accepted with probability
    ``min(1, exp(−ΔE) q(x | x') / q(x' | x))`` and the chains sample ``p(x) ∝ exp(−E(x))``
    exactly. With ``metropolis=False`` (ULA) every finite proposal is taken — TFP's
    "uncalibrated" kernel: same proposal, no correction — and the chains carry an
    ``O(τ)`` bias that shrinks with the step size. ``info["accept_prob"]`` is still the
    probability MALA would have accepted with, a gauge of that bias.

    ``noise_scale`` ``s`` ≠ 1 gives the "noisy gradient descent" used to train EBMs (Du &
    Mordatch 2019; Nijkamp et al. 2019: a large gradient step with little noise). Unadjusted,
    it does **not** sample ``p``: it samples a sharpened density (for ``s < 1``, roughly
    ``p^{1/s²}`` for small ``τ``). Adjusted, the Metropolis test uses the proposal's actual
    noise, so MALA stays exact.

    Proposals whose energy or gradient is NaN/inf are rejected (also by ULA) and flagged in
    ``info["divergent"]``.

    Args:
        step_size: initial ``τ`` (the time step of the diffusion).
        metropolis: MALA (True) or ULA (False).
        noise_scale: ``s`` above.
        adapt_step_size: tune ``τ`` by dual averaging towards ``target_accept`` during burn-in
            (default: on for MALA, off for ULA, whose step size sets its bias).
        adapt_mass: tune the diagonal ``M⁻¹`` from burn-in draws (default as above).
        per_chain: adapt one step size and mass per chain instead of shared values.
        mass_estimator: ``"gradient"`` or ``"variance"``; see ``ebm.samplers.adaptation``.
        dense_mass: a dense ``M⁻¹ = L Lᵀ`` estimated across chains: the proposal is the one
            above in whitened coordinates ``x = L z``.
        rescue: restart chains stuck during burn-in from healthy ones (``ebm.samplers.rescue``).
        target_accept: default 0.574, optimal for MALA in high dimension (Roberts & Rosenthal 1998).
        blocks: the blocks to update (default: all non-observed ones), e.g. in a composite.

    Info per step, each ``(n_chains,)``: ``accept_prob``, ``accepted``, ``energy_error``
    (``−log`` of the Metropolis ratio, nats), ``divergent``, ``energy``, ``step_size``; ULA
    also ``unstable``: a finite proposal taken with an energy error above 1000 nats (the
    step is past the stable range; ``ebm.sample`` warns once at the end).
    """

    target_accept = 0.574

    def __init__(
        self,
        step_size: float = 0.01,
        metropolis: bool = True,
        *,
        noise_scale: float = 1.0,
        adapt_step_size: bool | None = None,
        adapt_mass: bool | None = None,
        per_chain: bool = False,
        mass_estimator: str = "gradient",
        dense_mass: bool = False,
        rescue: bool = True,
        target_accept: float | None = None,
        blocks: Iterable[str] | None = None,
    ):
        if not noise_scale > 0:
            raise ValueError(f"noise_scale must be positive, got {noise_scale!r}")
        super().__init__(
            step_size,
            adapt_step_size=metropolis if adapt_step_size is None else adapt_step_size,
            adapt_mass=metropolis if adapt_mass is None else adapt_mass,
            per_chain=per_chain,
            mass_estimator=mass_estimator,
            dense_mass=dense_mass,
            rescue=rescue,
            target_accept=target_accept,
            blocks=blocks,
        )
        self.metropolis = bool(metropolis)
        self.noise_scale = float(noise_scale)

    def transition(self, model, s: GradientState, generator):
        if s.dense:
            return self._dense_transition(model, s, generator)
        x, energy, grad = s.position, s.energy, s.grad
        drift_scale = s.step_size * s.inv_mass
        noise_sd = (2 * drift_scale).sqrt_().mul_(self.noise_scale)
        noise = self.normal(x, generator)
        proposal = torch.addcmul(x - drift_scale * grad, noise_sd, noise)
        new_energy, new_grad = energy_and_grad(model, s.layout, s.state, proposal)
        finite = finite_rows(new_energy, new_grad)
        # Reverse move x' -> x in units of the proposal's noise: q(x | x') ∝ exp(-|back|²/2).
        back = (x - proposal + drift_scale * new_grad) / noise_sd
        log_ratio = energy - new_energy + 0.5 * (noise.square().sum(-1) - back.square().sum(-1))
        return self._decide(x, energy, grad, proposal, new_energy, new_grad, log_ratio, finite, generator)

    def _dense_transition(self, model, s: GradientState, generator):
        """The same proposal in whitened coordinates ``z`` (``x = x0 + L z``, identity mass)."""
        x, energy, grad, factor = s.position, s.energy, s.grad, s.mass_factor
        step_size = s.step_size.reshape(())
        noise_sd = (2 * step_size).sqrt() * self.noise_scale
        noise = self.normal(x, generator)
        z = noise_sd * noise - step_size * (grad @ factor)
        proposal = x + z @ factor.T
        new_energy, new_grad = energy_and_grad(model, s.layout, s.state, proposal)
        finite = finite_rows(new_energy, new_grad)
        back = (-z + step_size * (new_grad @ factor)) / noise_sd
        log_ratio = energy - new_energy + 0.5 * (noise.square().sum(-1) - back.square().sum(-1))
        return self._decide(x, energy, grad, proposal, new_energy, new_grad, log_ratio, finite, generator)

    def _decide(self, x, energy, grad, proposal, new_energy, new_grad, log_ratio, finite, generator):
        accept_prob, accepted = self.metropolis_accept(log_ratio, finite, generator)
        if not self.metropolis:
            accepted = finite
        info = {
            "accept_prob": accept_prob,
            "accepted": accepted,
            "energy_error": -log_ratio,
            "divergent": ~finite,
        }
        if not self.metropolis:
            # ULA takes every finite proposal, even one MALA would reject by a huge margin: a
            # step past the stable range blows the chains up; ebm.sample reports it once
            info["unstable"] = finite & (-log_ratio > MAX_ENERGY_ERROR)
        return select(accepted, proposal, x), select(accepted, new_energy, energy), select(accepted, new_grad, grad), info
