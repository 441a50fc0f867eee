"""``Independent``: a fully factorised model with closed-form ``log Z`` and exact samples.

Every site is independent: a Bernoulli over the "up" value with logit ``l`` for discrete
blocks, a Normal ``N(loc, scale²)`` for ``Real`` blocks. It is the tractable base of
annealed importance sampling; ``Independent.base_rate`` fits it to data, which for a
binary RBM is the base-rate model of Salakhutdinov & Murray (2008): visible biases at the
data log-odds, hidden units uniform.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch.distributions import Bernoulli, Normal
from torch.nn.functional import softplus

from ebm.model import EnergyModel, State
from ebm.variables import Domain


class Independent(EnergyModel):
    """Independent sites over the same blocks as another model.

    ``E(x) = Σ_discrete −l·(x − down)/(up − down) + Σ_real ½((x − loc)/scale)²`` (nats), so
    that ``log Z = Σ softplus(l) + Σ log(√(2π)·scale)``.

    Args:
        variables: ``{name: domain}``, e.g. ``model.variables``.
        params: per block, ``{"logits": (*shape)}`` for discrete blocks or ``{"loc", "scale"}``
            for ``Real`` ones; a missing block gets logits 0 (uniform) or ``N(0, 1)``.
    """

    def __init__(self, variables: Mapping[str, Domain], params: Mapping[str, Mapping[str, torch.Tensor]] | None = None):
        super().__init__(**dict(variables))
        params = dict(params or {})
        unknown = [k for k in params if k not in variables]
        if unknown:
            raise ValueError(f"params for unknown block(s) {unknown}; the blocks are {list(variables)}")
        for name, domain in variables.items():
            given = params.get(name, {})
            keys = ("logits",) if domain.discrete else ("loc", "scale")
            extra = [k for k in given if k not in keys]
            if extra:
                raise ValueError(f"block '{name}' ({domain!r}) takes params {keys}, got {extra}")
            defaults = {"logits": 0.0, "loc": 0.0, "scale": 1.0}
            for key in keys:
                value = torch.as_tensor(given.get(key, defaults[key]), dtype=torch.get_default_dtype())
                value = value.expand(domain.shape).clone() if value.dim() == 0 else value
                if value.shape != domain.shape:
                    raise ValueError(
                        f"{key} of block '{name}' must have shape {tuple(domain.shape)}, got {tuple(value.shape)}"
                    )
                if key == "scale" and not bool((value > 0).all()):
                    raise ValueError(f"scale of block '{name}' must be positive")
                self.register_buffer(f"{name}_{key}", value)

    @classmethod
    def base_rate(cls, model: EnergyModel, data: Mapping[str, torch.Tensor] | None = None, eps: float = 1e-3) -> Independent:
        """The independent model matching the per-site marginals of ``data``.

        Discrete blocks in ``data`` get the log-odds of their "up" frequency, clipped to
        ``[eps, 1 − eps]``; ``Real`` blocks their per-site mean and standard deviation;
        blocks absent from ``data`` stay uniform (discrete) or ``N(0, 1)`` (real). The
        result is in the model's dtype and device.
        """
        params = {}
        if data is not None:
            data = model.as_state(data, what="data")
            names = [k for k in model.variables if k in data]
            model.check_state(data, blocks=names, what="data")
            for name in names:
                domain, x = model.variables[name], data[name].double()
                if domain.discrete:
                    down, up = domain.values
                    p = ((x.mean(0) - down) / (up - down)).clamp(eps, 1 - eps)
                    params[name] = {"logits": (p.log() - (-p).log1p()).cpu()}
                else:
                    params[name] = {"loc": x.mean(0).cpu(), "scale": x.std(0).clamp_min(eps).cpu()}
        return cls(model.variables, params).to(device=model.device, dtype=model.dtype)

    def _param(self, name: str, key: str) -> torch.Tensor:
        return getattr(self, f"{name}_{key}")

    def energy(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``E(x)`` of the given blocks, shape ``(batch,)`` (absent blocks contribute 0)."""
        total = None
        for name, domain in self.variables.items():
            if name not in state:
                continue
            x = state[name]
            if domain.discrete:
                down, up = domain.values
                e = -((x - down) / (up - down) * self._param(name, "logits"))
            else:
                e = 0.5 * ((x - self._param(name, "loc")) / self._param(name, "scale")).square()
            e = e.reshape(x.shape[0], -1).sum(-1)
            total = e if total is None else total + e
        if total is None:
            raise ValueError(f"state has none of the blocks {list(self.variables)}")
        return total

    def conditional(self, name: str, state: Mapping[str, torch.Tensor]) -> torch.distributions.Distribution:
        """The block's own factorised distribution, expanded to the batch of ``state``."""
        if name not in self.variables:
            raise KeyError(f"no block '{name}'")
        n = next(iter(state.values())).shape[0]
        shape = (n, *self.variables[name].shape)
        if self.variables[name].discrete:
            return Bernoulli(logits=self._param(name, "logits").expand(shape), validate_args=False)
        return Normal(self._param(name, "loc").expand(shape), self._param(name, "scale").expand(shape), validate_args=False)

    def log_partition_block(self, name: str) -> torch.Tensor:
        """``log Z`` of one block's factor (0-dim tensor, nats)."""
        if self.variables[name].discrete:
            return softplus(self._param(name, "logits")).sum()
        return (self._param(name, "scale").log() + 0.5 * math.log(2 * math.pi)).sum()

    def log_partition(self) -> torch.Tensor:
        """Exact ``log Z`` (0-dim tensor, nats)."""
        return sum(self.log_partition_block(k) for k in self.variables)

    def free_energy(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``E`` of the given blocks minus ``log Z`` of the absent ones, shape ``(batch,)``."""
        missing = [k for k in self.variables if k not in state]
        return self.energy(state) - sum(self.log_partition_block(k) for k in missing)

    def sample(self, n: int, generator: torch.Generator | None = None) -> State:
        """``n`` exact independent draws of every block, ``{name: (n, *shape)}``."""
        out = {}
        for name, domain in self.variables.items():
            if domain.discrete:
                p = torch.sigmoid(self._param(name, "logits"))
                u = torch.rand((n, *domain.shape), generator=generator, dtype=p.dtype, device=p.device)
                out[name] = domain.from_bits(u < p, dtype=p.dtype)
            else:
                loc, scale = self._param(name, "loc"), self._param(name, "scale")
                noise = torch.randn((n, *domain.shape), generator=generator, dtype=loc.dtype, device=loc.device)
                out[name] = loc + scale * noise
        return out
