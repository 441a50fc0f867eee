"""``Tempered``: a model at inverse temperature β, on the geometric path from a base model.

``E_β(x) = β·E(x) + (1 − β)·E₀(x)`` (``E₀ = 0`` without a base), so ``p_β ∝ p^β p₀^(1−β)``:
the intermediate distributions of annealed importance sampling (Neal 2001) and the
replicas of parallel tempering. ``β`` is a scalar or a per-chain tensor ``(n_chains,)``
broadcast over every block, so that one batched state holds chains at many temperatures.

Conditionals stay in closed form because natural parameters mix linearly along the path:
Bernoulli logits become ``β·l + (1 − β)·l₀``, Normal precisions ``β·τ + (1 − β)·τ₀`` (and
precision-weighted means likewise). Any sampler drives a ``Tempered`` view unchanged.

With one discrete block ``h`` left out of the state, ``free_energy`` sums it out exactly
when its conditional is a factorised Bernoulli (the RBM's hidden layer): the energy is then
linear in ``h``, so ``F_β(x) = E_β(x, h = down) − Σⱼ softplus(l_β,ⱼ(x))``. For an RBM with
a base-rate ``E₀ = −a₀ᵀv`` this is Salakhutdinov & Murray's (2008)
``p_β(v) ∝ exp((1−β)a₀ᵀv + βaᵀv) Πⱼ (1 + exp(β(vW + b)ⱼ))``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch.distributions import Bernoulli, Distribution, Independent, Normal
from torch.nn.functional import softplus

from ebm.model import EnergyModel, checked_energy


class PathTerms(NamedTuple):
    """The β-independent pieces of ``log f_β`` at a batch of states (see ``Tempered.terms``).

    ``energy``/``base_energy``: ``(batch,)`` energies (at ``h = down`` when a block is
    summed out); ``logits``/``base_logits``: ``(batch, n_sites)`` logits of the summed-out
    block, or ``None`` when nothing is summed out. Base entries are 0 without a base.
    """

    energy: torch.Tensor
    base_energy: torch.Tensor | float
    logits: torch.Tensor | None
    base_logits: torch.Tensor | float | None


def _rows(beta: torch.Tensor, ndim: int) -> torch.Tensor:
    # a per-chain beta (n,) broadcast against (n, *shape); a scalar stays as is
    return beta if beta.dim() == 0 else beta.reshape(-1, *([1] * (ndim - 1)))


def _unwrap(dist: Distribution) -> tuple[Distribution, int]:
    if isinstance(dist, Independent):
        return dist.base_dist, dist.reinterpreted_batch_ndims
    return dist, 0


def _wrap(dist: Distribution, ndims: int) -> Distribution:
    return Independent(dist, ndims) if ndims else dist


def mix(dist: Distribution, base: Distribution | None, beta: torch.Tensor) -> Distribution:
    """``∝ dist^β · base^(1−β)`` for factorised Bernoulli or Normal conditionals (``base=None``:
    a flat base). Raises ``NotImplementedError`` for other families."""
    d1, ndims = _unwrap(dist)
    d0 = None if base is None else _unwrap(base)[0]
    if isinstance(d1, Bernoulli) and (d0 is None or isinstance(d0, Bernoulli)):
        b = _rows(beta, d1.logits.dim())
        logits = b * d1.logits if d0 is None else b * d1.logits + (1 - b) * d0.logits
        return _wrap(Bernoulli(logits=logits, validate_args=False), ndims)
    if isinstance(d1, Normal) and (d0 is None or isinstance(d0, Normal)):
        b = _rows(beta, d1.loc.dim())
        precision = b * d1.scale.pow(-2)
        if d0 is None:
            return _wrap(Normal(d1.loc, precision.rsqrt(), validate_args=False), ndims)
        base_precision = (1 - b) * d0.scale.pow(-2)
        total = precision + base_precision
        loc = (precision * d1.loc + base_precision * d0.loc) / total
        return _wrap(Normal(loc, total.rsqrt(), validate_args=False), ndims)
    raise NotImplementedError(
        f"cannot temper a {type(d1).__name__} conditional"
        + ("" if d0 is None else f" with a {type(d0).__name__} base")
        + " (only factorised Bernoulli and Normal)"
    )


class Tempered(EnergyModel):
    """``model`` at inverse temperature ``beta``, optionally on the geometric path from ``base``.

    Args:
        model: the target model (``β = 1``).
        beta: a float or a tensor: 0-dim, or ``(n_chains,)`` with one β per chain. Settable
            (``tempered.beta = ...``) without copying the model; a tensor is used as is (no
            checks, no host sync), a float is checked to be in ``[0, 1]``.
        base: the model at ``β = 0`` over the same blocks (e.g. ``ebm.models.Independent``);
            ``None`` means ``E₀ = 0`` (uniform for discrete blocks, improper for ``Real``).
    """

    def __init__(self, model: EnergyModel, beta: float | torch.Tensor = 1.0, base: EnergyModel | None = None):
        if not isinstance(model, EnergyModel):
            raise TypeError(f"model must be an ebm.EnergyModel, got {type(model).__name__}")
        super().__init__(**model.variables)
        if base is not None and base.variables != model.variables:
            raise ValueError(f"base has blocks {base.variables} but the model has {model.variables}")
        self.model = model
        self.base = base
        self.beta = beta

    @property
    def beta(self) -> torch.Tensor:
        """Inverse temperature: 0-dim or ``(n_chains,)``, on the model's device and dtype."""
        return self._beta

    @beta.setter
    def beta(self, value: float | torch.Tensor) -> None:
        if not isinstance(value, torch.Tensor):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"beta must be in [0, 1], got {value!r}")
        elif value.dim() > 1:
            raise ValueError(f"beta must be a scalar or a (n_chains,) tensor, got shape {tuple(value.shape)}")
        self._beta = torch.as_tensor(value, dtype=self.model.dtype, device=self.model.device)

    def energy(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``β·E(x) + (1 − β)·E₀(x)``, shape ``(batch,)``, nats."""
        e = self.beta * checked_energy(self.model, state)
        if self.base is not None:
            e = e + (1 - self.beta) * self.base.energy(state)
        return e

    def conditional(self, name: str, state: Mapping[str, torch.Tensor]) -> Distribution:
        """The model's conditional with natural parameters mixed along the path (see ``mix``)."""
        base = None if self.base is None else self.base.conditional(name, state)
        return mix(self.model.conditional(name, state), base, self.beta)

    def summed_block(self, state: Mapping[str, torch.Tensor]) -> str | None:
        """The block missing from ``state`` (to be summed out), ``None`` when none is missing.

        Raises ``NotImplementedError`` when more than one block, or a continuous one, is missing.
        """
        missing = [k for k in self.variables if k not in state]
        if not missing:
            return None
        if len(missing) > 1 or not self.variables[missing[0]].discrete:
            raise NotImplementedError(
                f"Tempered sums out exactly one discrete block with a factorised conditional; missing {missing}"
            )
        return missing[0]

    def terms(self, state: Mapping[str, torch.Tensor]) -> PathTerms:
        """The β-independent pieces of ``log f_β(state)``: with them ``log_density`` evaluates
        ``−E_β`` or ``−F_β`` at any β without touching the model again (AIS needs two βs
        per state)."""
        name = self.summed_block(state)
        if name is None:
            base_energy = 0.0 if self.base is None else self.base.energy(state)
            return PathTerms(checked_energy(self.model, state), base_energy, None, None)
        domain = self.variables[name]
        n = next(iter(state.values())).shape[0]
        down = torch.full((n, *domain.shape), domain.values[0], dtype=self.dtype, device=self.device)
        full = {**state, name: down}
        energy, logits = checked_energy(self.model, full), self._logits(self.model, name, full)
        if self.base is None:
            return PathTerms(energy, 0.0, logits, 0.0)
        return PathTerms(energy, self.base.energy(full), logits, self._logits(self.base, name, full))

    @staticmethod
    def _logits(model: EnergyModel, name: str, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        dist, _ = _unwrap(model.conditional(name, state))
        if not isinstance(dist, Bernoulli):
            raise NotImplementedError(f"block '{name}' has a {type(dist).__name__} conditional, not a Bernoulli")
        return dist.logits.reshape(dist.logits.shape[0], -1)

    @staticmethod
    def log_density(terms: PathTerms, beta: torch.Tensor | float) -> torch.Tensor:
        """Unnormalised ``log f_β``: ``−E_β`` of full states or ``−F_β`` with a block summed out,
        shape ``(batch,)``; ``beta`` a scalar or ``(batch,)``."""
        out = -(beta * terms.energy + (1 - beta) * terms.base_energy)
        if terms.logits is not None:
            b = _rows(torch.as_tensor(beta), 2)
            out = out + softplus(b * terms.logits + (1 - b) * terms.base_logits).sum(-1)
        return out

    @staticmethod
    def log_ratio(terms: PathTerms, beta: torch.Tensor | float, previous: torch.Tensor | float) -> torch.Tensor:
        """``log f_β − log f_previous`` at the same states, ``(batch,)``, in float64.

        Written as a difference of the energies times ``Δβ`` plus softplus differences, so
        that nothing cancels between two large free energies (AIS adds ~10⁴ of these).
        """
        e1, e0 = terms.energy.double(), torch.as_tensor(terms.base_energy).double()
        out = -(beta - previous) * (e1 - e0)
        if terms.logits is not None:
            l1, l0 = terms.logits.double(), torch.as_tensor(terms.base_logits).double()
            b, p = _rows(torch.as_tensor(beta), 2), _rows(torch.as_tensor(previous), 2)
            out = out + (softplus(b * l1 + (1 - b) * l0) - softplus(p * l1 + (1 - p) * l0)).sum(-1)
        return out

    def free_energy(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``F_β`` with the one block missing from ``state`` summed out (see the module doc)."""
        if self.summed_block(state) is None:
            raise NotImplementedError("free_energy needs one block left out of the state to sum out")
        return -self.log_density(self.terms(state), self.beta)
