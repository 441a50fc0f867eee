"""``ebm.sample``: drive a sampler over many chains and record the draws as ``Chains``."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping

import torch
from tqdm.auto import tqdm

from ebm import distributed
from ebm.model import EnergyModel, State
from ebm.reliability import separate_targets, warn_unreliable
from ebm.samplers.base import Sampler, SamplerState, check_sampler
from ebm.summary import Summary, sampler_statistics, summarize


class Chains:
    """Draws recorded by ``ebm.sample``.

    ``chains[name]`` is ``(n_draws, n_chains, *shape)`` for every block (an expanded view of
    the data for observed blocks); ``chains.energy`` is ``(n_draws, n_chains)``;
    ``chains.stats`` holds the sampler's per-step records (acceptance probability, accepted
    flag, ...), each ``(n_draws, n_chains)``; ``chains.last`` is the state after the final
    step and ``chains.sampler_state`` the sampler's state there, with what warm-up learned
    (HMC/Langevin step size and mass, a tempering ladder). For samplers that report
    ``divergent`` transitions, ``chains.divergences`` counts them per chain ``(n_chains,)``
    over every post-burn-in step (thinned-out steps included) and ``chains.n_divergent`` is
    the total.

    To continue the run, pass the chains themselves: ``ebm.sample(model, sampler,
    n_steps=..., init=chains, seed=<new seed>)`` resumes from ``chains.last`` with
    ``chains.sampler_state`` and the same observed blocks; ``burn_in=0`` (the default)
    keeps the tuning as it is, ``burn_in > 0`` re-tunes starting from it. The sampler must
    be of the kind that drew the chains (``chains.sampler_type``). ``init=chains.last``
    instead starts new chains at those positions, tuned afresh from the sampler's settings.
    """

    #: a chain with at least this many divergent transitions is named in sample()'s warning
    repeated_divergences = 2

    def __init__(
        self,
        draws: dict[str, torch.Tensor],
        energy: torch.Tensor,
        last: State,
        observed: frozenset[str],
        stats: dict[str, torch.Tensor] | None = None,
        sampler_state: SamplerState | None = None,
        divergences: torch.Tensor | None = None,
        sampler_type: str | None = None,
    ):
        self.draws = draws
        self.energy = energy
        self.last = last
        self.observed = observed
        self.stats = stats or {}
        self.sampler_state = sampler_state
        self.divergences = divergences
        #: class name of the sampler that drew the chains (continuations must use the same kind)
        self.sampler_type = sampler_type

    @property
    def n_divergent(self) -> int:
        """Total divergent transitions after burn-in (0 for samplers that have none)."""
        return 0 if self.divergences is None else int(self.divergences.sum())

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.draws:
            raise KeyError(f"no block '{name}' in these chains; blocks: {list(self.draws)}")
        return self.draws[name]

    def __contains__(self, name: str) -> bool:
        return name in self.draws

    def keys(self):
        return self.draws.keys()

    @property
    def n_draws(self) -> int:
        return self.energy.shape[0]

    @property
    def n_chains(self) -> int:
        return self.energy.shape[1]

    def __repr__(self) -> str:
        blocks = ", ".join(
            f"{k}{tuple(v.shape[2:])}{' observed' if k in self.observed else ''}" for k, v in self.draws.items()
        )
        return f"Chains({self.n_draws} draws x {self.n_chains} chains; {blocks})"

    def summary(self, functions: Mapping[str, Callable[[State], torch.Tensor]] | None = None) -> Summary:
        """Per-block mean, sd, MCSE of the mean and sd, bulk and tail ESS and rank-normalised
        R-hat (tensors of the block's shape; see ``ebm.diagnostics``), plus the energy, scalar
        ``functions`` of the state and the sampler's statistics. When the chains are clamped to
        different observed rows (one data row per chain) each targets its own distribution:
        R-hat is then not computed and ESS/MCSE combine each chain's own estimates.

        Args:
            functions: ``{name: fn}`` with ``fn(state) -> (batch,)``, e.g.
                ``{"m": lambda state: state["s"].mean((-2, -1))}``; each gets the same
                statistics as a block (shape ``()``), computed from ``self.apply(fn)``.

        Returns:
            A ``Summary`` (a dict ``{name: {"mean", "sd", "mcse", "mcse_sd", "ess", "ess_tail",
            "rhat"}}`` with the sampler's statistics in ``.sampler``); printing it shows a
            table that flags R-hat above 1.01 and ESS below 100.
        """
        separate = separate_targets(self)
        entries = {k: summarize(v, separate) for k, v in self.draws.items() if k not in self.observed}
        entries["energy"] = summarize(self.energy, separate)
        for name, fn in (functions or {}).items():
            if name in entries:
                raise ValueError(f"function name '{name}' clashes with a block or 'energy'; pick another")
            entries[name] = summarize(self.apply(fn), separate)
        sampler = sampler_statistics(self.stats)
        if self.divergences is not None:
            sampler["divergences"] = self.n_divergent  # thinned-out steps count too
        return Summary(entries, sampler, self.n_draws, self.n_chains, separate)

    def apply(self, fn: Callable[[State], torch.Tensor], max_batch: int = 65536) -> torch.Tensor:
        """Evaluate a scalar function of the state on every draw of every chain.

        Args:
            fn: ``fn(state) -> (batch,)`` for a state dict ``{name: (batch, *shape)}`` (e.g.
                ``model.energy``, or a magnetisation ``lambda s: s["s"].mean((-2, -1))``).
            max_batch: at most this many states per call of ``fn`` (draws are chunked).

        Returns:
            ``(n_draws, n_chains)`` values, computed without gradients.
        """
        if not callable(fn):
            raise TypeError(f"apply needs a function state -> (batch,), got {type(fn).__name__}")
        step = max(1, max_batch // self.n_chains)
        out = []
        with torch.no_grad():
            for i in range(0, self.n_draws, step):
                chunk = {k: v[i : i + step].flatten(0, 1) for k, v in self.draws.items()}
                rows = chunk[next(iter(chunk))].shape[0]
                value = torch.as_tensor(fn(chunk))
                if value.shape != (rows,):
                    raise ValueError(f"fn must return one value per state, shape ({rows},); got {tuple(value.shape)}")
                out.append(value.reshape(-1, self.n_chains))
        return torch.cat(out)

    def to_arviz(self):
        """The draws as an ArviZ ``InferenceData`` (needs the optional ``arviz`` package).

        Sampled blocks go to ``posterior`` (dims ``chain``, ``draw``, then ``{name}_dim_k``),
        ``-energy`` to ``sample_stats.lp``, the sampler's records to ``sample_stats``
        (``accept_prob`` as ``acceptance_rate``, ``divergent`` as ``diverging``, the rest by
        their names) and clamped blocks to ``observed_data`` (one row per chain).
        """
        from ebm.arviz_export import to_inference_data

        return to_inference_data(self)


def _prepare_state(
    model: EnergyModel,
    n_chains: int | None,
    observed: Mapping[str, torch.Tensor] | None,
    init: Mapping[str, torch.Tensor] | None,
    generator: torch.Generator,
) -> tuple[State, frozenset[str]]:
    observed = model.as_state(observed or {}, what="observed")
    init = model.as_state(init or {}, what="init")
    obs_names = frozenset(observed)
    for name, x in list(observed.items()):
        domain = model.variables.get(name)
        if domain is not None and isinstance(x, torch.Tensor) and x.shape == domain.shape:
            observed[name] = x.unsqueeze(0)  # one observation broadcast to all chains below
    if observed:
        data_n = model.check_state(observed, blocks=list(observed), what="observed")
        if data_n == 1 and n_chains is not None:
            observed = {k: v.expand(n_chains, *v.shape[1:]) for k, v in observed.items()}
        elif n_chains is not None and n_chains != data_n:
            raise ValueError(f"n_chains={n_chains} but observed data has {data_n} rows: one chain per data row")
        else:
            n_chains = data_n
    init = {k: v for k, v in init.items() if k not in obs_names}
    if init:
        model.check_state(init, blocks=list(init), what="init")
        init_n = next(iter(init.values())).shape[0]
        if n_chains is not None and init_n != n_chains:
            raise ValueError(f"init has {init_n} chains but n_chains={n_chains}")
        n_chains = init_n
    if n_chains is None:
        raise ValueError("give n_chains, observed data or an init state")
    if not isinstance(n_chains, int) or n_chains < 1:
        raise ValueError(f"n_chains must be a positive integer, got {n_chains!r}")
    rest = [k for k in model.variables if k not in observed and k not in init]
    random = model.random_state(n_chains, generator, rest)
    state = {k: (observed.get(k, init.get(k, random.get(k)))) for k in model.variables}
    state = {k: v.clone() if k in init else v for k, v in state.items()}
    return state, obs_names


def _continued_state(
    chains: Chains, sampler: Sampler, n_chains: int | None, observed: Mapping[str, torch.Tensor] | None
) -> tuple[State, frozenset[str], SamplerState]:
    """The state, observed names and sampler state to continue ``chains`` from."""
    if chains.sampler_state is None:
        raise ValueError("these chains carry no sampler state to continue from; pass init=chains.last instead")
    kind = type(sampler).__name__
    if chains.sampler_type not in (None, kind):
        raise TypeError(
            f"these chains were drawn by {chains.sampler_type}; continue them with a {chains.sampler_type} "
            f"(not a {kind}), or start the {kind} at their positions with init=chains.last"
        )
    if observed is not None:
        raise ValueError("continuing chains keep their observed blocks; leave observed out (or pass init=chains.last)")
    if n_chains is not None and n_chains != chains.n_chains:
        raise ValueError(f"n_chains={n_chains} but the chains to continue have {chains.n_chains}")
    held = next(iter(chains.sampler_state.state.values())).shape[0]
    if held != chains.n_chains:
        # a run split across ranks gathers its draws, but each rank's sampler state holds its own chains
        raise ValueError(
            f"the sampler state holds {held} of these {chains.n_chains} chains (a run split across ranks); "
            "continue from init=chains.last, with a new warm-up"
        )
    return dict(chains.sampler_state.state), chains.observed, chains.sampler_state


def _make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def _gather_chains(n_local: int, draws, energy, last, stats, divergences):
    """Every rank's chains concatenated in rank order (chains on dim 1 of draws, energies
    and per-chain statistics, dim 0 of ``last`` and divergences); statistics that are not
    per chain (a step size) keep this rank's value."""

    def by_chain(x: torch.Tensor) -> torch.Tensor:
        return distributed.gather_rows(x.transpose(0, 1), "chain gather").transpose(0, 1)

    draws = {k: by_chain(v) for k, v in draws.items()}
    stats = {k: by_chain(v) if v.dim() > 1 and v.shape[1] == n_local else v for k, v in stats.items()}
    last = {k: distributed.gather_rows(v, "chain gather") for k, v in last.items()}
    if divergences is not None:
        divergences = distributed.gather_rows(divergences, "chain gather")
    return draws, by_chain(energy), last, stats, divergences


def sample(
    model: EnergyModel,
    sampler: Sampler,
    n_chains: int | None = None,
    n_steps: int = 1000,
    burn_in: int = 0,
    thin: int = 1,
    observed: Mapping[str, torch.Tensor] | None = None,
    init: Mapping[str, torch.Tensor] | Chains | None = None,
    seed: int | None = 0,
    progress: bool | None = None,
    generator: torch.Generator | None = None,
) -> Chains:
    """Run ``n_chains`` MCMC chains of ``sampler`` on ``model`` and record the draws.

    Args:
        model: the energy model.
        sampler: any ``ebm`` sampler (``Gibbs``, ``Langevin``, ``HMC``, ...).
        n_chains: number of chains (one per row of ``observed`` data when that is given).
        n_steps: steps after burn-in; every ``thin``-th is recorded (``n_steps // thin`` draws).
        burn_in: steps before recording; adaptive samplers tune themselves during these, on a
            schedule sized to ``burn_in`` (``Sampler.start_adaptation``). 0: no tuning. The
            two add up: a run takes ``burn_in + n_steps`` steps, so a burn-in longer than
            ``n_steps`` is fine (``n_steps=1`` after a long burn-in gives one draw per chain);
            ``n_steps=0`` only tunes (``chains.sampler_state``).
        thin: record every ``thin``-th step; ``n_steps`` between 1 and ``thin - 1`` would
            record nothing and warns.
        observed: ``{name: (n, *shape)}`` blocks clamped to data (a single unbatched
            observation is shared by all chains); all other blocks are sampled.
        init: initial states of (some) non-observed blocks, e.g. ``chains.last``; the rest
            start at random from their domains. Or a ``Chains`` from an earlier run of
            ``sampler`` on this model: the run continues from ``chains.last`` with its
            ``chains.sampler_state`` (tuned step size, mass, tempering ladder) and its
            observed blocks (then leave ``observed`` and ``n_chains`` out).
        seed: seed of the chains' random numbers (``None``: fresh entropy). Ignored when
            ``generator`` is given. Give a continuation a seed of its own, or it reuses the
            random numbers of the run it continues.
        progress: show a tqdm progress bar (default: when stderr is a terminal).
        generator: a ``torch.Generator`` on the model's device, to continue a random stream.

    Under a process group of several ranks (``ebm.distributed``), fresh chains (``n_chains``
    given; no ``observed``, ``init`` or ``generator``) are split across the ranks: rank ``r``
    runs its share from ``seed + 1_000_003 r`` (``distributed.shard_seed``) and every rank
    returns all the chains, in rank order (draws, energies, per-chain statistics,
    divergences and ``last`` are gathered), so summaries and plots see every chain. What is
    not split: warm-up adapts on each rank's own chains, and ``chains.sampler_state`` is
    this rank's (continue a split run on every rank with ``init=chains.last``); parallel
    tempering keeps each chain's replicas on its rank. Any other call runs whole on every
    rank.

    Returns:
        ``Chains`` with draws ``(n_draws, n_chains, *shape)`` per block and energies
        ``(n_draws, n_chains)``.
    """
    check_sampler(sampler, "ebm.sample")
    for label, value, low in (("n_steps", n_steps, 0), ("burn_in", burn_in, 0), ("thin", thin, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
    if 0 < n_steps < thin:
        warnings.warn(
            f"n_steps={n_steps} with thin={thin} records no draws: every thin-th of the n_steps steps after "
            f"burn-in is recorded; raise n_steps to a multiple of thin",
            UserWarning,
            stacklevel=2,
        )
    rank, size = distributed.world()
    split = size > 1 and n_chains is not None and observed is None and init is None and generator is None
    if split:
        if n_chains < size:
            raise ValueError(f"n_chains={n_chains} is fewer than the {size} ranks: use at least one chain per rank")
        n_chains = distributed.local_count(n_chains, rank, size)
        seed = None if seed is None else distributed.shard_seed(seed, rank)
    generator = generator or _make_generator(seed, model.device)
    carried = None
    if isinstance(init, Chains):
        state, obs_names, carried = _continued_state(init, sampler, n_chains, observed)
    else:
        state, obs_names = _prepare_state(model, n_chains, observed, init, generator)
    n_chains = next(iter(state.values())).shape[0]
    n_draws = n_steps // thin
    if progress is None:
        progress = sys.stderr.isatty()
    grad_context = torch.enable_grad if sampler.needs_grad else torch.no_grad

    draws = {
        k: torch.empty((n_draws, *v.shape), dtype=v.dtype, device=v.device) for k, v in state.items() if k not in obs_names
    }
    energy = torch.empty((n_draws, n_chains), dtype=model.dtype, device=model.device)
    stats: dict[str, torch.Tensor] = {}
    divergences: torch.Tensor | None = None

    with grad_context(), tqdm(total=burn_in + n_steps, disable=not progress, desc="sampling", leave=False) as bar:
        if carried is None:
            sstate = sampler.init(model, state, obs_names, generator)
        else:
            sstate = sampler.resume(model, carried)
        # a sampler's run_steps (Gibbs on an RBM) takes several steps with empty info in one
        # call, the same chains as one step at a time; None: it has no such path here
        run_steps = getattr(sampler, "run_steps", None)
        if burn_in:
            sstate = sampler.start_adaptation(model, sstate, burn_in)
            fast = None if run_steps is None else run_steps(model, sstate, burn_in, generator)
            if fast is not None:
                sstate = fast
                bar.update(burn_in)
            for _ in range(0 if fast is not None else burn_in):
                sstate, _info = sampler.step(model, sstate, generator, adapt=True)
                bar.update()
            sstate = sampler.end_adaptation(model, sstate)
        t = 0  # steps taken after burn-in
        while t < n_steps:
            ahead = min(thin - t % thin, n_steps - t)  # up to and including the next recorded step
            fast = None if run_steps is None or ahead == 1 else run_steps(model, sstate, ahead, generator)
            if fast is not None:
                sstate, info = fast, {}
            else:
                sstate, info = sampler.step(model, sstate, generator, adapt=False)
                ahead = 1
            t += ahead
            bar.update(ahead)
            if "divergent" in info:
                # Counted on the device every step (thinned steps too); read once at the end.
                divergent = info["divergent"]
                divergences = divergent.long() if divergences is None else divergences.add_(divergent)
            if t % thin:
                continue
            i = t // thin - 1
            for k in draws:
                draws[k][i] = sstate.state[k]
            e = info.get("energy")
            with torch.no_grad():
                energy[i] = e if e is not None else model.energy(sstate.state)
            for key, value in info.items():
                if key == "energy":
                    continue
                if key not in stats:
                    stats[key] = torch.zeros((n_draws, *value.shape), dtype=value.dtype, device=value.device)
                stats[key][i] = value
    for k in obs_names:
        draws[k] = state[k].unsqueeze(0).expand(n_draws, *state[k].shape)
    draws = {k: draws[k] for k in model.variables}
    last = {k: v.detach().clone() for k, v in sstate.state.items()}
    if split:
        draws, energy, last, stats, divergences = _gather_chains(n_chains, draws, energy, last, stats, divergences)
    chains = Chains(draws, energy, last, obs_names, stats, sstate, divergences, type(sampler).__name__)
    warn_unreliable(chains, sampler, burn_in)
    return chains
