"""Negative (model, "asleep") phases: where the model-phase states of eq. 4 come from.

- ``ContrastiveDivergence`` (CD-k): chains restart at each data batch and take ``k`` steps.
- ``PersistentChains`` (PCD-k): ``n_chains`` chains, independent of the batch size, carried
  from batch to batch (Tieleman 2008), ``k`` steps per batch.
- ``ReplayBuffer``: a buffer of past negatives for continuous EBMs (Du & Mordatch 2019);
  each batch starts from buffer entries, a fraction re-initialised at random.

All work with any sampler of the ``init``/``step`` protocol: none of them knows which kernel
it drives. States are ``{name: (n_chains, *shape)}`` with every block of the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from ebm.model import EnergyModel, State
from ebm.samplers.base import Sampler, SamplerState
from ebm.samplers.tempering import refreshed


def grad_mode(sampler: Sampler):
    """Autograd on for samplers that need gradients (Langevin, HMC), off for the others."""
    return torch.enable_grad() if sampler.needs_grad else torch.no_grad()


def advance(
    model: EnergyModel,
    sampler: Sampler,
    sampler_state: SamplerState,
    k: int,
    generator: torch.Generator | None,
    adapt: bool = False,
) -> SamplerState:
    """``k`` steps of ``sampler``, with autograd on only for samplers that need it; in one
    call through ``sampler.run_steps`` where it has one (Gibbs on an RBM: the same chains)."""
    run_steps = getattr(sampler, "run_steps", None)
    with grad_mode(sampler):
        fast = None if run_steps is None else run_steps(model, sampler_state, k, generator)
        if fast is not None:
            return fast
        for _ in range(k):
            sampler_state, _ = sampler.step(model, sampler_state, generator, adapt)
    return sampler_state


def run_chains(
    model: EnergyModel,
    sampler: Sampler,
    start: Mapping[str, torch.Tensor],
    k: int,
    generator: torch.Generator | None,
    observed: Iterable[str] = (),
) -> State:
    """Every block after ``k`` steps of ``sampler`` from ``start`` (all blocks), with the
    blocks in ``observed`` clamped; ``(n, *shape)`` per block, detached."""
    start = {name: start[name] for name in model.variables}
    with grad_mode(sampler):
        sstate = sampler.init(model, start, observed, generator)
    sstate = advance(model, sampler, sstate, k, generator)
    return {name: x.detach() for name, x in sstate.state.items()}


def clamped_latents(
    model: EnergyModel,
    sampler: Sampler,
    batch: Mapping[str, torch.Tensor],
    k: int,
    generator: torch.Generator | None,
) -> State:
    """Every block of ``model``: ``batch``'s blocks as given, the others after ``k`` steps of
    ``sampler`` from a random start with ``batch`` clamped; ``(n, *shape)`` per block."""
    n = next(iter(batch.values())).shape[0]
    latent = [name for name in model.variables if name not in batch]
    start = {**model.random_state(n, generator, latent), **batch}
    return run_chains(model, sampler, start, k, generator, observed=batch.keys())


def _check_steps(k: int) -> int:
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k (sampler steps per batch) must be a positive integer, got {k!r}")
    return k


class NegativePhase:
    """Base class of negative phases.

    ``setup`` is called once before training (``data`` is the whole observed training set),
    ``__call__`` once per batch with the data-phase states. ``state_dict``/``load_state_dict``
    carry whatever persists between batches, for checkpoints.
    """

    def setup(self, model: EnergyModel, sampler: Sampler, data: Mapping[str, torch.Tensor], generator) -> None:
        """Prepare before the first batch. The default does nothing."""

    def __call__(self, model: EnergyModel, sampler: Sampler, positive: Mapping[str, torch.Tensor], generator) -> State:
        """Model-phase states for one batch whose data-phase states are ``positive``."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class ContrastiveDivergence(NegativePhase):
    """CD-k (Hinton 2002): each batch's chains start at the data and take ``k`` steps.

    The start has the data in the observed blocks and latent blocks drawn given the data:
    the data-phase latents when the data phase sampled them, else one sampler step with the
    data clamped (for the RBM, ``h ~ p(h | v)``, eq. 14). So CD-1 on an RBM is the classic
    ``v → h → v' → h'``. There are as many chains as rows in the batch.
    """

    def __init__(self, k: int = 1):
        self.k = _check_steps(k)

    def __call__(self, model, sampler, positive, generator):
        start = positive
        if not all(name in positive for name in model.variables):
            start = clamped_latents(model, sampler, positive, 1, generator)
        return run_chains(model, sampler, start, self.k, generator)


class PersistentChains(NegativePhase):
    """PCD-k (Tieleman 2008): ``n_chains`` persistent chains take ``k`` steps per batch.

    The sampler state (chains and whatever the sampler carries: adapted step sizes, tempered
    replicas) persists from batch to batch while the parameters change under it, so before
    each batch a sampler that caches model-dependent quantities (energies, gradients)
    recomputes them through its ``refresh(model, sampler_state)`` (``samplers.tempering.refreshed``).

    Args:
        k: sampler steps per batch.
        n_chains: number of persistent chains (independent of the batch size).
        init: ``"random"`` (every block from its domain's random init) or ``"data"``
            (observed blocks from random data rows, latents drawn given them).
        burn_in: steps run once at setup with ``adapt=True``, between
            ``sampler.start_adaptation(..., burn_in)`` and ``sampler.end_adaptation`` (adaptive
            samplers tune on a schedule sized to ``burn_in``).
    """

    def __init__(self, k: int = 1, n_chains: int = 100, init: str = "random", burn_in: int = 0):
        self.k = _check_steps(k)
        if not isinstance(n_chains, int) or n_chains < 1:
            raise ValueError(f"n_chains must be a positive integer, got {n_chains!r}")
        if init not in ("random", "data"):
            raise ValueError(f"init must be 'random' or 'data', got {init!r}")
        if not isinstance(burn_in, int) or burn_in < 0:
            raise ValueError(f"burn_in must be a non-negative integer, got {burn_in!r}")
        self.n_chains, self.init, self.burn_in = n_chains, init, burn_in
        self._sstate: SamplerState | None = None

    def setup(self, model, sampler, data, generator):
        if self.init == "data":
            n = next(iter(data.values())).shape[0]
            rows = torch.randint(n, (self.n_chains,), generator=generator, device=model.device)
            start = clamped_latents(model, sampler, {k: v[rows] for k, v in data.items()}, 1, generator)
        else:
            start = model.random_state(self.n_chains, generator)
        with grad_mode(sampler):
            self._sstate = sampler.init(model, start, (), generator)
        if self.burn_in:
            self._sstate = sampler.start_adaptation(model, self._sstate, self.burn_in)
            self._sstate = advance(model, sampler, self._sstate, self.burn_in, generator, adapt=True)
            self._sstate = sampler.end_adaptation(model, self._sstate)

    @property
    def chains(self) -> State | None:
        """The current persistent chains ``{name: (n_chains, *shape)}`` (``None`` before setup)."""
        return None if self._sstate is None else self._sstate.state

    def __call__(self, model, sampler, positive, generator):
        if self._sstate is None:
            raise RuntimeError("PersistentChains.setup must run before the first batch")
        self._sstate = refreshed(sampler, model, self._sstate)
        self._sstate = advance(model, sampler, self._sstate, self.k, generator)
        return {name: x.detach() for name, x in self._sstate.state.items()}

    def state_dict(self):
        return {"sampler_state": self._sstate}

    def load_state_dict(self, state):
        self._sstate = state["sampler_state"]


class ReplayBuffer(NegativePhase):
    """Replay-buffer negatives (Du & Mordatch 2019), mostly for continuous EBMs.

    A buffer of ``buffer_size`` past negatives starts at random states. Each batch draws
    ``n_chains`` distinct entries, replaces each with a fresh random state with probability
    ``reinit`` (so new modes keep being found), runs ``k`` sampler steps from there and
    writes the results back in place of the drawn entries.

    Args:
        k: sampler steps per batch.
        n_chains: negatives per batch.
        buffer_size: number of stored states.
        reinit: probability that a drawn entry restarts from the domain's random init.
    """

    def __init__(self, k: int = 20, n_chains: int = 100, buffer_size: int = 10_000, reinit: float = 0.05):
        self.k = _check_steps(k)
        if not isinstance(n_chains, int) or n_chains < 1:
            raise ValueError(f"n_chains must be a positive integer, got {n_chains!r}")
        if not isinstance(buffer_size, int) or buffer_size < n_chains:
            raise ValueError(f"buffer_size must be an integer >= n_chains={n_chains}, got {buffer_size!r}")
        if not 0.0 <= reinit <= 1.0:
            raise ValueError(f"reinit must be a probability in [0, 1], got {reinit!r}")
        self.n_chains, self.buffer_size, self.reinit = n_chains, buffer_size, reinit
        self._buffer: State | None = None

    def setup(self, model, sampler, data, generator):
        self._buffer = model.random_state(self.buffer_size, generator)

    def __call__(self, model, sampler, positive, generator):
        if self._buffer is None:
            raise RuntimeError("ReplayBuffer.setup must run before the first batch")
        device = model.device
        # distinct entries, so that no two chains continue the same stored state
        index = torch.randperm(self.buffer_size, generator=generator, device=device)[: self.n_chains]
        fresh = model.random_state(self.n_chains, generator)
        restart = torch.rand(self.n_chains, generator=generator, device=device) < self.reinit
        start = {}
        for name, stored in self._buffer.items():
            mask = restart.view(-1, *([1] * (stored.dim() - 1)))
            start[name] = torch.where(mask, fresh[name], stored[index])
        state = run_chains(model, sampler, start, self.k, generator)
        for name, x in state.items():
            self._buffer[name][index] = x
        return state

    def state_dict(self):
        return {"buffer": self._buffer}

    def load_state_dict(self, state):
        self._buffer = state["buffer"]


def negative_phase(method: str | NegativePhase, k: int, n_chains: int) -> NegativePhase:
    """The negative phase named by ``method``: ``"cd"``, ``"pcd"`` or ``"replay"``, or an
    instance passed through."""
    if isinstance(method, NegativePhase):
        return method
    methods = {
        "cd": lambda: ContrastiveDivergence(k),
        "pcd": lambda: PersistentChains(k, n_chains),
        "replay": lambda: ReplayBuffer(k, n_chains),
    }
    if method not in methods:
        raise ValueError(f"method must be one of {sorted(methods)} or a NegativePhase, got {method!r}")
    return methods[method]()
