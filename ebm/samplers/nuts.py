"""``NUTS``: Pyro's No-U-Turn sampler behind the ``ebm`` sampler protocol, as a reference.

Slow by design: one Pyro NUTS kernel per chain, run chain after chain on the host (Pyro
samples one chain per process; nothing is batched). Use it for a few chains to get
reference-quality draws — multinomial NUTS with Stan-style step-size and diagonal mass
adaptation — against which the batched samplers (``Langevin``, ``HMC``) can be checked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import torch
from pyro.infer.mcmc import NUTS as PyroNUTS

from ebm.samplers.base import Sampler, SamplerState
from ebm.samplers.gradient import Layout


@dataclass
class NUTSState(SamplerState):
    """The chains plus one warmed-up Pyro kernel and divergence count per chain, and the
    torch RNG state that Pyro's draws continue from (Pyro uses the global generator)."""

    layout: Layout | None = None
    kernels: list = field(default_factory=list)
    divergences: list = field(default_factory=list)
    rng_state: torch.Tensor | None = None


class NUTS(Sampler):
    """Pyro's NUTS on the latent ``Real`` blocks, one independent kernel per chain.

    ``init`` runs Pyro's own warm-up (``warmup_steps`` steps of step-size and diagonal mass
    adaptation) for every chain, so ``ebm.sample(model, ebm.NUTS(), n_chains=4,
    n_steps=1000)`` needs no ``burn_in``; any ``burn_in`` given adds untuned draws that are
    discarded. The potential is ``model.energy`` with the other blocks held at their values
    in the current state: it is rebuilt at every step, so inside ``ebm.Composite`` each step
    draws from the conditional given the other blocks as they are now, and moves made from
    outside (a tempering swap, a parameter update under PCD) are seen.

    Pyro draws from torch's global generator; to stay reproducible under ``ebm.sample``'s
    ``seed`` without disturbing the global stream, the kernels run on a private RNG state
    seeded from the sampling generator and saved between steps.

    Args:
        warmup_steps: Pyro warm-up steps per chain, run in ``init``.
        target_accept: Pyro's ``target_accept_prob``.
        max_tree_depth: Pyro's maximum tree depth (at most ``2^depth`` leapfrog steps).
        blocks: the blocks to update (default: all non-observed ones).

    Info per step, each ``(n_chains,)``: ``divergent``.
    """

    needs_grad = True

    def __init__(
        self,
        warmup_steps: int = 500,
        target_accept: float = 0.8,
        max_tree_depth: int = 10,
        blocks: Iterable[str] | None = None,
    ):
        if not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative integer, got {warmup_steps!r}")
        if not 0.0 < target_accept < 1.0:
            raise ValueError(f"target_accept must lie in (0, 1), got {target_accept!r}")
        self.warmup_steps = warmup_steps
        self.target_accept = target_accept
        self.max_tree_depth = max_tree_depth
        self.blocks = None if blocks is None else tuple(blocks)

    def init(self, model, state, observed=(), generator=None) -> NUTSState:
        observed = frozenset(observed)
        layout = Layout.of(model, observed, self.blocks, "NUTS")
        position = layout.flatten(state).detach()
        seed = int(torch.randint(2**62, (1,), generator=generator, device=position.device))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            kernels, params = [], []
            for i in range(position.shape[0]):
                kernel = PyroNUTS(
                    potential_fn=self._potential(model, layout, state, i),
                    target_accept_prob=self.target_accept,
                    max_tree_depth=self.max_tree_depth,
                )
                kernel.initial_params = {"x": position[i].clone()}
                kernel.setup(self.warmup_steps)
                p = kernel.initial_params
                for _ in range(self.warmup_steps):
                    p = kernel.sample(p)
                kernels.append(kernel)
                params.append(p)
            rng_state = torch.get_rng_state()
        new = torch.stack([p["x"] for p in params]).detach()
        zeros = [0] * len(kernels)
        return NUTSState(layout.unflatten(new, state), observed, layout, kernels, zeros, rng_state)

    @staticmethod
    def _potential(model, layout: Layout, state, row: int):
        others = {k: v[row : row + 1] for k, v in state.items() if k not in layout.names}

        def potential(params):
            return model.energy(layout.unflatten(params["x"].unsqueeze(0), others)).squeeze(0)

        return potential

    def step(self, model, sampler_state, generator=None, adapt=False):
        s = sampler_state
        position = s.layout.flatten(s.state).detach()
        params, counts = [], []
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(s.rng_state)
            for i, kernel in enumerate(s.kernels):
                # A kernel's potential closes over the other blocks, and Pyro caches the
                # energy and gradient of its last draw: both would go stale when another
                # part of a Composite, a tempering swap or a parameter update changed the
                # state or the model, so both are redone from the current state.
                kernel.potential_fn = self._potential(model, s.layout, s.state, i)
                kernel.clear_cache()
                params.append(kernel.sample({"x": position[i].clone()}))
                counts.append(len(kernel.diagnostics()["divergences"]))
            rng_state = torch.get_rng_state()
        divergent = [now > before for now, before in zip(counts, s.divergences, strict=True)]
        position = torch.stack([p["x"] for p in params]).detach()
        info = {"divergent": torch.tensor(divergent, device=position.device)}
        new = replace(s, state=s.layout.unflatten(position, s.state), divergences=counts, rng_state=rng_state)
        return new, info
