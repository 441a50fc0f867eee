"""The linear-Gaussian latent model (probabilistic PCA as an energy): exact answers to test against."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn
from torch.distributions import MultivariateNormal, Normal

from ebm.model import EnergyModel
from ebm.variables import Real


class LinearGaussian(EnergyModel):
    """``E(x, z) = |x − Wz − μ|² / 2σ² + |z|² / 2`` over ``x`` ``Real(n_observed)`` and ``z`` ``Real(n_latent)``.

    This is probabilistic PCA (Tipping & Bishop 1999) written as an energy: ``z ~ N(0, I)``,
    ``x | z ~ N(Wz + μ, σ²I)``, so the marginal is ``x ~ N(μ, C)`` with ``C = WWᵀ + σ²I`` and
    ``log Z = (n_observed/2) log 2πσ² + (n_latent/2) log 2π`` is known. Trained with the
    generic eq. 4 gradient (data phase: ``z`` sampled with ``x`` clamped; model phase:
    ``(x, z)`` sampled), ``C`` should approach the closed-form maximum-likelihood solution
    ``maximum_likelihood`` (up to a rotation of ``W``). The model deliberately has no
    ``free_energy``, so trainers sample ``z`` rather than integrating it out.

    Parameters: ``W`` ``(n_observed, n_latent)``, ``mu`` ``(n_observed,)``, scalar ``log_sigma``.

    Args:
        n_observed: dimension of ``x``.
        n_latent: dimension of ``z``.
        sigma: initial noise standard deviation.
        init_std: standard deviation of the initial weights.
        seed: seed of the weight initialisation.
    """

    def __init__(self, n_observed: int, n_latent: int, sigma: float = 1.0, init_std: float = 0.1, seed: int | None = None):
        super().__init__(x=Real(n_observed), z=Real(n_latent))
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma!r}")
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(n_observed, n_latent, generator=generator) * init_std)
        self.mu = nn.Parameter(torch.zeros(n_observed))
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)))

    @property
    def n_observed(self) -> int:
        return self.W.shape[0]

    @property
    def n_latent(self) -> int:
        return self.W.shape[1]

    def energy(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``E(x, z)``, shape ``(batch,)``, nats."""
        x, z = state["x"], state["z"]
        residual = x - z @ self.W.T - self.mu
        return 0.5 * residual.square().sum(-1) * torch.exp(-2 * self.log_sigma) + 0.5 * z.square().sum(-1)

    def posterior_precision(self) -> torch.Tensor:
        """``M = I + WᵀW/σ²``, the precision of ``p(z | x)``, shape ``(n_latent, n_latent)``."""
        eye = torch.eye(self.n_latent, dtype=self.W.dtype, device=self.W.device)
        return eye + self.W.T @ self.W * torch.exp(-2 * self.log_sigma)

    def conditional(self, name: str, state: Mapping[str, torch.Tensor]):
        """``p(x | z) = N(Wz + μ, σ²I)`` or ``p(z | x) = N(M⁻¹Wᵀ(x − μ)/σ², M⁻¹)``."""
        if name == "x":
            mean = state["z"] @ self.W.T + self.mu
            return Normal(mean, self.log_sigma.exp().expand_as(mean), validate_args=False)
        if name == "z":
            precision = self.posterior_precision()
            covariance = torch.cholesky_inverse(torch.linalg.cholesky(precision))
            mean = (state["x"] - self.mu) @ self.W @ covariance * torch.exp(-2 * self.log_sigma)
            return MultivariateNormal(mean, scale_tril=torch.linalg.cholesky(covariance), validate_args=False)
        raise KeyError(f"LinearGaussian has no block '{name}'")

    def covariance(self) -> torch.Tensor:
        """The marginal covariance of ``x``, ``C = WWᵀ + σ²I``, shape ``(n_observed, n_observed)``."""
        eye = torch.eye(self.n_observed, dtype=self.W.dtype, device=self.W.device)
        return self.W @ self.W.T + torch.exp(2 * self.log_sigma) * eye

    def marginal_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x) = log N(x; μ, C)`` with ``z`` integrated out, shape ``(batch,)``, nats."""
        return MultivariateNormal(self.mu, covariance_matrix=self.covariance(), validate_args=False).log_prob(x)

    @classmethod
    def maximum_likelihood(cls, x: torch.Tensor, n_latent: int) -> LinearGaussian:
        """The closed-form maximum-likelihood fit to data ``x`` ``(n, n_observed)`` (Tipping &
        Bishop 1999): ``μ`` the sample mean, ``σ²`` the mean of the discarded eigenvalues of
        the sample covariance ``S`` (normalised by ``n``), ``W = U_k (Λ_k − σ²I)^{1/2}``."""
        if x.dim() != 2 or not 0 < n_latent < x.shape[1]:
            raise ValueError(f"need data (n, d) with 0 < n_latent < d; got shape {tuple(x.shape)}, n_latent={n_latent}")
        mean = x.mean(0)
        centred = (x - mean).double()
        eigenvalues, vectors = torch.linalg.eigh(centred.T @ centred / x.shape[0])
        eigenvalues, vectors = eigenvalues.flip(0), vectors.flip(1)
        noise = eigenvalues[n_latent:].mean()
        weights = vectors[:, :n_latent] * (eigenvalues[:n_latent] - noise).clamp_min(0).sqrt()
        model = cls(x.shape[1], n_latent).to(x.dtype)
        with torch.no_grad():
            model.W.copy_(weights)
            model.mu.copy_(mean)
            model.log_sigma.copy_(0.5 * noise.log())
        return model
