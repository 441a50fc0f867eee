"""``EnergyModel``: the base class of every model, a named set of variable blocks and an energy.

A state is a ``dict[str, Tensor]`` mapping each block name to a tensor of shape
``(batch, *block.shape)``; the model's density is ``p(x) = exp(-E(x)) / Z`` (eq. 2 of the
note). Subclasses write ``energy``; ``conditional`` and ``free_energy`` are optional and
let samplers, trainers and evaluators take exact shortcuts.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from ebm.devices import check_device
from ebm.variables import Domain

State = dict[str, torch.Tensor]


class DataWarning(UserWarning):
    """Data that a model's parametrisation does not suit (e.g. unstandardised inputs to a
    Gaussian RBM); the message says what to do."""


class EnergyModel(nn.Module):
    """An energy-based model over named blocks of variables.

    Declare blocks by name in ``__init__``::

        class Ising(ebm.EnergyModel):
            def __init__(self, L, beta):
                super().__init__(s=ebm.Spin(L, L))
                self.beta = beta

            def energy(self, state):
                s = state["s"]
                return -self.beta * (s * s.roll(1, -1) + s * s.roll(1, -2)).sum((-2, -1))

    The constructor's arguments are recorded so that ``save``/``ebm.load`` can rebuild the
    model; keep them to plain Python values (numbers, strings, tuples, lists, dicts).
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        def recording_init(self, *args, __init=init, __signature=signature, **kw):
            # The outermost subclass __init__ records the call; inner super() calls do not.
            first = not hasattr(self, "_config_recorded")
            if first:
                object.__setattr__(self, "_config_recorded", True)
            __init(self, *args, **kw)
            if first:
                bound = __signature.bind(self, *args, **kw)
                bound.apply_defaults()
                config = dict(bound.arguments)
                config.pop("self")
                for name, p in __signature.parameters.items():
                    if p.kind is inspect.Parameter.VAR_KEYWORD and name in config:
                        config.update(config.pop(name))
                object.__setattr__(self, "config", config)

        recording_init.__doc__ = init.__doc__
        recording_init.__signature__ = signature
        cls.__init__ = recording_init

    def __init__(self, **blocks: Domain):
        super().__init__()
        if not blocks:
            raise ValueError("an EnergyModel needs at least one block, e.g. super().__init__(x=ebm.Real(2))")
        for name, domain in blocks.items():
            if not isinstance(domain, Domain):
                raise TypeError(f"block '{name}' must be an ebm domain (Binary, Spin, Real), got {domain!r}")
        self._variables = dict(blocks)

    # ------------------------------------------------------------------ the model
    @property
    def variables(self) -> dict[str, Domain]:
        """The blocks in declaration order: ``{name: domain}``."""
        return dict(self._variables)

    def energy(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Energy ``E(x)`` of a batch of full states, shape ``(batch,)``, in nats."""
        raise NotImplementedError(f"{type(self).__name__} must implement energy(state)")

    def conditional(self, name: str, state: Mapping[str, torch.Tensor]) -> torch.distributions.Distribution:
        """Optional: the distribution of block ``name`` given the other blocks of ``state``.

        For ``Binary`` and ``Spin`` blocks return a ``Bernoulli`` over the "up" value (1 or +1)
        with batch shape ``(batch, *shape)``; for ``Real`` blocks a ``Normal`` (or
        ``Independent``/``MultivariateNormal``). Raise ``NotImplementedError`` for blocks
        without a closed form; samplers then fall back to generic updates.
        """
        raise NotImplementedError

    def free_energy(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Optional: ``-log sum_y exp(-E(state, y))``, the blocks missing from ``state`` summed
        (or integrated) out, shape ``(batch,)``, in nats. For an RBM, ``free_energy({"v": v})``
        is ``F(v)``. Raise ``NotImplementedError`` for block sets without a closed form.
        """
        raise NotImplementedError

    def data_warning(self, state: Mapping[str, torch.Tensor], what: str = "data") -> str | None:
        """Optional: why values ``state`` (already checked by ``check_state``) are ill-suited to
        this model as parametrised, or ``None``. ``check_state`` warns ``DataWarning`` with it;
        the default finds nothing."""
        return None

    # ------------------------------------------------------------------ helpers
    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of states: that of the first parameter or buffer, else the default."""
        for t in self._tensors():
            if t.is_floating_point():
                return t.dtype
        return torch.get_default_dtype()

    @property
    def device(self) -> torch.device:
        """Device of states: that of the first parameter or buffer, else the CPU."""
        for t in self._tensors():
            return t.device
        return torch.device("cpu")

    def to(self, *args, **kwargs):
        """``nn.Module.to``, with a device that does not exist here refused by one
        ``ValueError`` naming the devices available."""
        for arg in (*args, kwargs.get("device")):
            if isinstance(arg, str | torch.device):
                check_device(arg)
        return super().to(*args, **kwargs)

    def cuda(self, device=None):
        check_device(torch.device("cuda", device) if isinstance(device, int) else device or "cuda")
        return super().cuda(device)

    def _tensors(self) -> Iterable[torch.Tensor]:
        yield from self.parameters()
        yield from self.buffers()

    def random_state(self, n: int, generator: torch.Generator | None = None, blocks: Iterable[str] | None = None) -> State:
        """A random state of ``n`` chains for ``blocks`` (all by default), in the model's dtype/device."""
        names = list(self._variables) if blocks is None else list(blocks)
        return {k: self._variables[k].random(n, generator=generator, dtype=self.dtype, device=self.device) for k in names}

    def as_state(self, state: Mapping, *, what: str = "state") -> State:
        """``state`` with its NumPy arrays made tensors (on the model's device) and its bool,
        integer and float64 blocks cast to the model's dtype, where every value survives the
        cast exactly; other blocks are passed through as they are, for ``check_state``.

        Call it once where data enters the public API (``fit``, ``sample``'s ``observed``
        and ``init``, the evaluators), never in a step loop: the exactness check reads the
        values.

        Raises:
            TypeError: a block's values cannot be held exactly in the model's dtype (e.g.
                float64 values with more digits than float32 keeps), naming the block.
        """
        if not isinstance(state, Mapping):
            return state
        dtype, out = self.dtype, {}
        for name, x in state.items():
            if isinstance(x, np.ndarray):
                if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
                    raise TypeError(f"{what} block '{name}' is a NumPy array of {x.dtype}; give numbers")
                x = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
            if isinstance(x, torch.Tensor) and x.dtype != dtype and not x.is_complex():
                cast = x.to(dtype)
                if x.dtype != torch.bool and not torch.allclose(cast.to(x.dtype), x, rtol=0, atol=0, equal_nan=True):
                    raise TypeError(
                        f"{what} block '{name}' has {x.dtype} values that {dtype} cannot hold exactly; "
                        f"convert it yourself with .to({dtype}) (or build the model in {x.dtype})"
                    )
                x = cast
            out[name] = x
        return out

    def check_state(
        self,
        state: Mapping[str, torch.Tensor],
        *,
        blocks: Iterable[str] | None = None,
        what: str = "state",
        values: bool = True,
    ) -> int:
        """Check a state dict entering the public API and return its batch size.

        Args:
            state: ``{name: (batch, *shape)}``.
            blocks: the block names ``state`` must have exactly (all blocks by default).
            what: how to call the state in error messages ("data", "init", ...).
            values: also check that values lie in each block's support, and warn
                ``DataWarning`` with ``data_warning``'s message if it has one (this reads the
                data once; never call it inside a step loop).

        Raises:
            TypeError, ValueError: naming the block and what was wrong.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"{what} must be a dict of block name -> tensor, got {type(state).__name__}")
        expected = list(self._variables) if blocks is None else list(blocks)
        unknown = [k for k in state if k not in self._variables]
        if unknown:
            raise ValueError(f"{what} has unknown block(s) {unknown}; the model's blocks are {list(self._variables)}")
        missing = [k for k in expected if k not in state]
        if missing:
            raise ValueError(f"{what} is missing block(s) {missing}")
        extra = [k for k in state if k not in expected]
        if extra:
            raise ValueError(f"{what} has block(s) {extra} that do not belong here (expected {expected})")
        batch = None
        for name in expected:
            x = state[name]
            domain = self._variables[name]
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{what} block '{name}' must be a torch.Tensor, got {type(x).__name__}")
            if x.dim() != len(domain.shape) + 1 or x.shape[1:] != domain.shape:
                raise ValueError(
                    f"{what} block '{name}' must have shape (batch, {', '.join(map(str, domain.shape))}), "
                    f"got {tuple(x.shape)}"
                )
            if x.dtype != self.dtype:
                raise TypeError(
                    f"{what} block '{name}' has dtype {x.dtype} but the model uses {self.dtype}; "
                    f"convert it with .to({self.dtype})"
                )
            if x.device != self.device:
                raise ValueError(
                    f"{what} block '{name}' is on {x.device} but the model is on {self.device}; move it with .to(device)"
                )
            if batch is None:
                batch = x.shape[0]
            elif x.shape[0] != batch:
                raise ValueError(f"{what} blocks have different batch sizes: '{name}' has {x.shape[0]}, expected {batch}")
            if values:
                domain.validate(name, x)
        if values and batch:
            message = self.data_warning(state, what)
            if message is not None:
                warnings.warn(message, DataWarning, stacklevel=3)
        return batch if batch is not None else 0

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Save the constructor arguments and parameters to ``path`` (atomic write).

        Load with ``ebm.load(path)``; the model's class must be importable there.
        """
        from ebm.io import save_model

        save_model(self, path)


def checked_energy(model: EnergyModel, state: Mapping[str, torch.Tensor], method: str = "energy") -> torch.Tensor:
    """``model.<method>(state)`` (``"energy"`` or ``"free_energy"``), checked to be a floating
    ``(batch,)`` tensor for a state of ``batch`` rows.

    Samplers and estimators compute with a user's energy through this, so that a wrong shape
    or an integer dtype is named here instead of surfacing as a broadcast error or as torch's
    "not implemented for 'Long'" further down. The check reads only metadata (no host sync).

    Raises:
        ValueError: the value is not of shape ``(batch,)``.
        TypeError: it is not a floating-point tensor.
    """
    value = getattr(model, method)(state)
    batch = next(iter(state.values())).shape[0]
    where = f"{type(model).__name__}.{method}"
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{where} must return a torch.Tensor of shape ({batch},), got {type(value).__name__}")
    if value.shape != (batch,):
        raise ValueError(
            f"{where} must return shape ({batch},), one value per row of the state, got {tuple(value.shape)}; "
            f"sum over the block's dimensions (e.g. .sum(-1))"
        )
    if not value.is_floating_point():
        raise TypeError(
            f"{where} returned a {value.dtype} tensor; energies must be floating point: "
            f"compute them in the state's dtype ({model.dtype}) instead of casting to an integer type"
        )
    return value
