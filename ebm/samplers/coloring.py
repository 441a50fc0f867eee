"""Structure discovery for block Gibbs: the interaction graph of a discrete block, its colouring.

Two sites ``i`` and ``j`` of a block *interact* when the energy change of one depends on the
value of the other: ``E`` is not a sum ``f(x_i, rest) + g(x_j, rest)``. Sites of one colour
(an independent set of the interaction graph) are conditionally independent given all the
other sites, so ``ebm.Gibbs`` updates them together.

Discovery (``discover``) reads the graph off the energy's Hessian ``∂²E/∂x_i∂x_j`` at one
random point in the *interior* of the domain (spins uniform in ``(-1, 1)``, bits in
``(0, 1)``, one-hot codes on the open simplex; other blocks likewise, real blocks standard
normal). For any energy that is a polynomial in the sites (every pairwise, Potts, k-body
or Curie–Weiss energy written with arithmetic) or an analytic function of them, a Hessian
entry that is not identically zero is non-zero at a random point with probability one
(Schwartz–Zippel), so the graph is exact, never missing an edge; an edge found spuriously
only costs speed. All ``N`` Hessian rows come from one double-backward pass over a batch of
``N`` copies of the point (row ``j`` differentiates ``∇E · u_j`` for a random direction
``u_j`` on site ``j``), in chunks of bounded memory: ``O(N²)`` work, about a second at
``N = 4096`` on a CPU. The Hessian's diagonal tells whether ``E`` is affine in every site
(then one gradient gives every local energy difference, ``ebm.samplers.local``).

Energies that are not smooth (``abs``, comparisons, ``argmax``, integer casts) can hide
interactions from derivatives, so every discovered colouring is then *verified on discrete
states* (``verify``): at a few random states, the energy change of flipping a random subset
of a colour must equal the sum of the single-site changes, and affine local differences must
equal the exact ones. A failed check, or an energy that autograd cannot differentiate, falls
back to exact discrete discovery (all mixed second differences, for blocks of at most
``DISCRETE_LIMIT`` sites), or else to one site per colour (always exact; ``N`` evaluations a
sweep), with a warning.

Results are cached per model and block, keyed on every parameter's and buffer's version
counter and storage (``p._version``, ``data_ptr``), on the number of optimiser steps taken
on it, and on the model's plain attributes, so that an optimiser step, an in-place write
(``with torch.no_grad(): p[...] = ...``) or ``model.beta = ...`` triggers a new discovery
(a zero coupling that became non-zero adds an edge). Optimiser steps are counted by a
global ``torch.optim`` step hook, because fused optimisers (``Adam(fused=True)``) update
parameters without bumping their version counters. A write through ``p.data`` bypasses
the version counter too and is not seen: write under ``torch.no_grad()`` instead.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from ebm.model import EnergyModel
from ebm.models.tempered import Tempered
from ebm.variables import Categorical, Domain, Real

#: exact discrete discovery enumerates all N² pairs: only for blocks up to this many sites
DISCRETE_LIMIT = 256
#: rows x entries of one discovery batch (bounds its memory)
CHUNK_ENTRIES = 2**22
#: random discrete states the verification uses
VERIFY_STATES = 4
#: random directions of the quadratic check
QUADRATIC_PROBES = 8


@dataclass(frozen=True)
class Graph:
    """A user-supplied interaction graph of one block: ``edges`` ``(n_edges, 2)`` of flat site
    indices (row-major over the block's sites; for ``Categorical(q, L, L)``, site ``(a, b)`` is
    ``a * L + b``). Give it as ``ebm.Gibbs(coloring=Graph(edges))``: ``ebm.Gibbs`` colours it
    greedily and verifies the colouring against the energy."""

    edges: object


@dataclass
class Structure:
    """What ``ebm.Gibbs`` needs to update one block colour by colour.

    Attributes:
        colors: one ``LongTensor`` of flat site indices per colour (on the model's device).
        affine: the energy is affine in every site, so one gradient gives all local energy
            differences; otherwise they are computed by exact batched evaluation.
        adjacency: ``(N, N)`` bool interaction graph (CPU), or ``None`` for a user colouring.
        how: how the graph was found (``"hessian"``, ``"discrete"``, ``"complete"``, ``"user"``).
        rows: for a one-block energy that is quadratic in the block, per colour the Hessian's
            rows of the colour's entries as a sparse CSR ``(|c|·k, size)`` matrix, so that the
            local fields are ``rows @ x + bias`` with no energy evaluation; else ``None``.
        bias: ``(size,)``, the gradient at ``x = 0`` (with ``rows``).
        fixed_batch: ``n_chains`` when the energy only takes batches of that size.
        plan: what ``ebm.samplers.local.quadratic_sweep`` derives from ``rows`` (built on
            the first sweep).
    """

    colors: list[torch.Tensor]
    affine: bool
    adjacency: torch.Tensor | None
    how: str
    rows: list[torch.Tensor] | None = None
    bias: torch.Tensor | None = None
    fixed_batch: int | None = None
    plan: object = None


# ---------------------------------------------------------------------- colouring
def greedy_coloring(adjacency: torch.Tensor) -> np.ndarray:
    """Colour labels ``(N,)`` of a graph given as an ``(N, N)`` bool adjacency: sites in order
    of decreasing degree (ties by index, so a periodic lattice with even sides gets its
    checkerboard), each taking the smallest colour none of its neighbours has."""
    adj = adjacency.cpu().numpy().astype(bool)
    np.fill_diagonal(adj, False)
    degree = adj.sum(1)
    order = np.argsort(-degree, kind="stable")
    labels = np.full(adj.shape[0], -1, dtype=np.int64)
    for site in order:
        used = labels[adj[site]]
        used = used[used >= 0]
        taken = np.zeros(len(used) + 1, dtype=bool)
        taken[used[used <= len(used)]] = True
        labels[site] = int(np.argmin(taken))
    return labels


def groups(labels: np.ndarray | torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """The flat site indices of each colour, colours in increasing label order."""
    labels = torch.as_tensor(np.asarray(labels)).reshape(-1)
    return [torch.nonzero(labels == c).reshape(-1).to(device) for c in torch.unique(labels).tolist()]


def conflicts(adjacency: torch.Tensor, colors: list[torch.Tensor]) -> tuple[int, int, int] | None:
    """A pair of interacting sites in one colour as ``(colour, i, j)``, or ``None``."""
    for c, sites in enumerate(colors):
        sub = adjacency[sites.cpu()][:, sites.cpu()].clone()
        sub.fill_diagonal_(False)
        bad = torch.nonzero(sub)
        if len(bad):
            i, j = bad[0].tolist()
            return c, int(sites[i]), int(sites[j])
    return None


def _site_name(domain: Domain, i: int) -> str:
    shape = domain.sites if isinstance(domain, Categorical) else domain.shape
    return str(tuple(int(a) for a in np.unravel_index(i, tuple(shape))))


def _wrong_coloring(name: str, domain: Domain, color: int, i: int, j: int, how: str) -> ValueError:
    return ValueError(
        f"the colouring given to ebm.Gibbs for block '{name}' is wrong: sites {_site_name(domain, i)} and "
        f"{_site_name(domain, j)} of colour {color} interact in the energy ({how}), so they cannot be "
        f"updated together; fix the colouring or pass coloring=None to discover one"
    )


# ---------------------------------------------------------------------- views and probes
def sites_view(x: torch.Tensor, domain: Domain) -> torch.Tensor:
    """``x`` ``(n, *shape)`` as ``(n, N, k)``: ``k = q`` one-hot entries per Categorical site, else 1."""
    k = domain.n_values if isinstance(domain, Categorical) else 1
    return x.reshape(x.shape[0], domain.n_sites, k)


def interior_point(domain: Domain, n: int, generator: torch.Generator, dtype, device) -> torch.Tensor:
    """``n`` random points in the interior of ``domain``'s convex hull (real blocks: N(0, 1))."""
    if isinstance(domain, Real):
        return torch.randn((n, *domain.shape), generator=generator, dtype=dtype).to(device)
    u = torch.rand((n, *domain.shape), generator=generator, dtype=dtype) * 0.8 + 0.1
    if isinstance(domain, Categorical):
        e = -u.log()
        return (e / e.sum(-1, keepdim=True)).to(device)
    down, up = domain.values
    return (down + (up - down) * u).to(device)


def _inner_models(model: EnergyModel) -> list[EnergyModel]:
    """The models whose structure a model's has: a tempered view has its own and its base's."""
    if isinstance(model, Tempered):
        inner = _inner_models(model.model)
        return inner + ([] if model.base is None else _inner_models(model.base))
    return [model]


# ---------------------------------------------------------------------- discovery
#: the batch size a model's energy insists on (per-chain parameters such as a ``beta`` of
#: shape ``(n_chains,)``), set while a structure is built; ``None``: any batch size works
_FIXED_BATCH: int | None = None


def energy_rows(model: EnergyModel, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``model.energy(state)``; for a model with per-chain parameters, evaluated in chunks of
    exactly ``n_chains`` rows (the last padded with copies of its first row), so that probes
    of any number of rows work. Differentiable."""
    fixed = _FIXED_BATCH
    m = next(iter(state.values())).shape[0]
    if fixed is None or m == fixed:
        return model.energy(state)
    out = []
    for start in range(0, m, fixed):
        part = {b: v[start : start + fixed] for b, v in state.items()}
        k = next(iter(part.values())).shape[0]
        if k < fixed:
            part = {b: torch.cat([v, v[:1].detach().expand(fixed - k, *v.shape[1:])]) for b, v in part.items()}
        out.append(model.energy(part)[:k])
    return torch.cat(out)


def needs_fixed_batch(model: EnergyModel, state: Mapping[str, torch.Tensor]) -> int | None:
    """``n_chains`` when ``model.energy`` fails on a batch of another size (per-chain
    parameters), else ``None``."""
    n = next(iter(state.values())).shape[0]
    rows = 1 if n != 1 else 2
    probe = {b: v[:1].expand(rows, *v.shape[1:]) for b, v in state.items()}
    try:
        with torch.no_grad():
            ok = model.energy(probe).shape == (rows,)
    except RuntimeError:
        ok = False
    return None if ok else n


def _probe(model: EnergyModel, name: str, context, point: torch.Tensor, directions: torch.Tensor):
    """``(∇E · directions_r, H directions_r)`` rows at ``point`` (one row per direction
    ``(m, *shape)``), or ``None`` when ``E`` is not twice differentiable in block ``name``."""
    m = directions.shape[0]
    x = point.expand(m, *point.shape[1:]).clone().requires_grad_(True)
    state = {**{b: v.expand(m, *v.shape[1:]) for b, v in context.items()}, name: x}
    try:
        with torch.enable_grad():
            energy = energy_rows(model, state)
            (grad,) = torch.autograd.grad(energy.sum(), x, create_graph=True)
            if not grad.requires_grad:
                return None  # piecewise linear or constant: no second derivatives to read
            (hvp,) = torch.autograd.grad((grad * directions).sum(), x, allow_unused=True)
    except RuntimeError:
        return None
    if hvp is None:
        return None
    return grad.detach(), hvp.detach()


def hessian_graph(
    model: EnergyModel, name: str, context: Mapping[str, torch.Tensor], generator: torch.Generator
) -> tuple[torch.Tensor, bool, torch.Tensor] | None:
    """``(adjacency (N, N) bool, affine, hessian)`` from the Hessian at a random interior
    point, or ``None`` when the energy cannot be differentiated twice in block ``name``.
    ``hessian`` is the sparse COO ``(size, size)`` Hessian over the block's entries (one-hot
    entries for Categorical). ``context`` holds one row ``(1, *shape)`` of every other block."""
    domain = model.variables[name]
    n_sites, size = domain.n_sites, domain.size
    k = size // n_sites
    point = interior_point(domain, 1, generator, model.dtype, model.device)
    rows_per_chunk = max(1, CHUNK_ENTRIES // max(1, size))
    found_rows, found_cols, found_vals = [], [], []
    for start in range(0, size, rows_per_chunk):
        stop = min(start + rows_per_chunk, size)
        m = stop - start
        directions = torch.zeros(m, size, dtype=model.dtype, device=model.device)
        directions[torch.arange(m), torch.arange(start, stop)] = 1.0
        probed = _probe(model, name, context, point, directions.reshape(m, *domain.shape))
        if probed is None:
            return None
        column = probed[1].reshape(m, size)  # row r: H e_{start + r}, the Hessian's column
        r, c = torch.nonzero(column, as_tuple=True)
        found_rows.append(c.cpu())
        found_cols.append((r + start).cpu())
        found_vals.append(column[r, c].cpu())
    rows, cols, vals = torch.cat(found_rows), torch.cat(found_cols), torch.cat(found_vals)
    hessian = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (size, size), check_invariants=False).coalesce()
    adjacency = torch.zeros(n_sites, n_sites, dtype=torch.bool)
    adjacency[rows // k, cols // k] = True
    affine = not bool(adjacency.diagonal().any())
    adjacency |= adjacency.clone().T
    adjacency.fill_diagonal_(False)
    return adjacency, affine, hessian


def quadratic_terms(
    model: EnergyModel, name: str, context: Mapping[str, torch.Tensor], hessian: torch.Tensor, generator
) -> torch.Tensor | None:
    """``b`` ``(size,)`` when ``E`` is quadratic in block ``name`` with Hessian ``hessian``
    everywhere (``∇E(x) = H x + b``), else ``None``. Checked at a second random point and
    context on ``QUADRATIC_PROBES`` random directions: a term of higher degree changes
    ``H v`` there (Schwartz–Zippel). Only for models with this one block (``b`` would
    otherwise depend on the other blocks' values)."""
    domain = model.variables[name]
    size = domain.size
    point = interior_point(domain, 1, generator, model.dtype, model.device)
    other = {b: interior_point(model.variables[b], 1, generator, model.dtype, model.device) for b in context}
    v = torch.randn(QUADRATIC_PROBES, size, generator=generator, dtype=model.dtype).to(model.device)
    probed = _probe(model, name, other, point, v.reshape(QUADRATIC_PROBES, *domain.shape))
    if probed is None:
        return None
    dense = hessian.to(model.device).to_dense()
    expected = v @ dense.T
    got = probed[1].reshape(QUADRATIC_PROBES, size)
    if (got - expected).abs().max() > _tolerance(model.dtype, dense.abs().sum(1).max() * v.abs().max()):
        return None
    zero = torch.zeros(1, *domain.shape, dtype=model.dtype, device=model.device)
    x = zero.requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(energy_rows(model, {**other, name: x}).sum(), x)
    return grad.reshape(size)


def alternatives(x: torch.Tensor, domain: Domain, generator: torch.Generator) -> torch.Tensor:
    """``x`` ``(n, N, k)`` (see ``sites_view``) with every site moved to another value: flipped,
    or a uniformly random other category."""
    if isinstance(domain, Categorical):
        q = domain.n_values
        shift = torch.randint(1, q, x.shape[:2], generator=generator).to(x.device)
        codes = (x.argmax(-1) + shift) % q
        return torch.nn.functional.one_hot(codes, q).to(x.dtype)
    return domain.flip(x)


def discrete_graph(
    model: EnergyModel, name: str, context: Mapping[str, torch.Tensor], generator: torch.Generator
) -> torch.Tensor:
    """``(N, N)`` bool adjacency from every mixed second difference
    ``E(x^{ij}) - E(x^i) - E(x^j) + E(x)`` at ``VERIFY_STATES`` random discrete states
    (``N² + N + 1`` energies each): exact up to cancellations at those states."""
    domain = model.variables[name]
    n_sites = domain.n_sites
    adjacency = torch.zeros(n_sites, n_sites, dtype=torch.bool)
    for _ in range(VERIFY_STATES):
        x = sites_view(domain.random(1, generator=generator, dtype=model.dtype), domain).to(model.device)
        other = alternatives(x, domain, generator)
        eye = torch.eye(n_sites, dtype=torch.bool, device=x.device).unsqueeze(-1)
        single = torch.where(eye, other, x)  # (N, N, k): row i moves site i
        pair = torch.where(eye.unsqueeze(0) | eye.unsqueeze(1), other, x)  # (N, N, N, k)
        states = torch.cat([x, single, pair.reshape(-1, n_sites, x.shape[-1])])
        energies = []
        for chunk in states.split(max(1, CHUNK_ENTRIES // domain.size)):
            m = chunk.shape[0]
            state = {**{b: v.expand(m, *v.shape[1:]) for b, v in context.items()}, name: chunk.reshape(m, *domain.shape)}
            energies.append(energy_rows(model, state).double())
        e = torch.cat(energies)
        e0, e1, e2 = e[0], e[1 : n_sites + 1], e[n_sites + 1 :].reshape(n_sites, n_sites)
        mixed = e2 - e1.unsqueeze(0) - e1.unsqueeze(1) + e0
        tol = _tolerance(model.dtype, e.abs().max())
        adjacency |= (mixed.abs() > tol).cpu()
    adjacency.fill_diagonal_(False)
    return adjacency


def _tolerance(dtype: torch.dtype, scale: torch.Tensor) -> torch.Tensor:
    # rounding of a handful of energy evaluations of magnitude ``scale`` in ``dtype``
    return 64 * torch.finfo(dtype).eps * (1 + scale)


def verify(
    model: EnergyModel,
    name: str,
    context: Mapping[str, torch.Tensor],
    colors: list[torch.Tensor],
    affine: bool,
    generator: torch.Generator,
) -> str | None:
    """Check a colouring on ``VERIFY_STATES`` random discrete states: for each colour, moving a
    random half of its sites at once changes the energy by the sum of the single-site
    changes, and (``affine``) the gradient predicts every single-site change. Returns what
    failed, or ``None``. Costs ``N + 1`` energies and one gradient per state plus two
    energies per colour."""
    from ebm.samplers.local import affine_differences

    domain = model.variables[name]
    n_sites = domain.n_sites
    r = VERIFY_STATES
    ctx = {b: v.expand(r, *v.shape[1:]) for b, v in context.items()}
    x = sites_view(domain.random(r, generator=generator, dtype=model.dtype), domain).to(model.device)
    other = alternatives(x, domain, generator)
    with torch.no_grad():
        e0 = energy_rows(model, {**ctx, name: x.reshape(r, *domain.shape)}).double()
        e1 = []
        rows = max(1, CHUNK_ENTRIES // (r * domain.size))
        for start in range(0, n_sites, rows):
            sites = torch.arange(start, min(start + rows, n_sites), device=x.device)
            m = len(sites)
            moved = x.unsqueeze(1).repeat(1, m, 1, 1)  # (r, m, N, k): copy j moves site start + j
            moved[:, torch.arange(m), sites] = other[:, sites]
            rep = {b: v.expand(r * m, *v.shape[1:]) for b, v in context.items()}
            e1.append(energy_rows(model, {**rep, name: moved.reshape(r * m, *domain.shape)}).double().reshape(r, m))
        delta = torch.cat(e1, 1) - e0.unsqueeze(1)
        tol = _tolerance(model.dtype, e0.abs().max() + delta.abs().sum(1).max())
        for c, sites in enumerate(colors):
            subset = sites[torch.rand(len(sites), generator=generator).to(sites.device) < 0.5]
            if len(subset) < 2:
                continue
            moved = x.clone()
            moved[:, subset] = other[:, subset]
            e = energy_rows(model, {**ctx, name: moved.reshape(r, *domain.shape)}).double()
            if ((e - e0) - delta[:, subset].sum(1)).abs().max() > tol:
                return f"moving several sites of colour {c} together changes the energy by more than their separate changes"
    if affine:
        state = {**ctx, name: x.reshape(r, *domain.shape)}
        predicted = affine_differences(model, name, domain, state)[1].double()  # (r, N, k) or (r, N, 1)
        if isinstance(domain, Categorical):
            current = (predicted * x).sum(-1)
            predicted = (predicted * other).sum(-1) - current
        else:
            predicted = predicted.squeeze(-1) * (other - x).squeeze(-1)
        if (predicted - delta).abs().max() > tol:
            return "the energy is not affine in its sites at discrete states (gradient differences are wrong)"
    return None


def _verify_all(models, name, context, colors, affine, generator) -> str | None:
    for m in models:
        problem = verify(m, name, context, colors, affine, generator)
        if problem is not None:
            return problem
    return None


# ---------------------------------------------------------------------- the cache
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: attribute counting the optimiser steps taken on a parameter (set by ``_count_steps``)
_STEPS = "_ebm_optimizer_steps"


def _count_steps(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    # fused optimiser kernels write parameters without bumping ``_version``: count the steps
    for group in optimizer.param_groups:
        for p in group["params"]:
            setattr(p, _STEPS, getattr(p, _STEPS, 0) + 1)


register_optimizer_step_post_hook(_count_steps)


_PLAIN = (int, float, str, bool)


def cache_key(model: EnergyModel, name: str, state: Mapping[str, torch.Tensor]) -> tuple:
    """What a block's structure depends on: parameter/buffer versions, optimiser steps and
    storage, the models' plain attributes, the blocks' domains, dtype and device. Reading
    it costs no host sync (a few microseconds a module: it is read every sweep)."""
    # the model's dtype and device are those of its tensors (each in the key), else the default dtype
    parts: list = [name, torch.get_default_dtype()]
    for m in _inner_models(model):
        for mod in m.modules():
            attributes = mod.__dict__
            parts.append(tuple((k, v) for k, v in attributes.items() if isinstance(v, _PLAIN) and k[0] != "_"))
            for tensors in (attributes["_parameters"], attributes["_buffers"]):
                parts.extend(
                    (t._version, getattr(t, _STEPS, 0), t.data_ptr(), t.shape, t.dtype, t.device)
                    for t in tensors.values()
                    if t is not None
                )
        parts.append(tuple(m.variables.items()))
    parts.append(tuple(state))
    return tuple(parts)


def structure(
    model: EnergyModel,
    name: str,
    state: Mapping[str, torch.Tensor],
    coloring: object = None,
    seed: int = 0,
) -> Structure:
    """The (cached) structure of block ``name`` of ``model``: discovered, or from the user's
    ``coloring`` (labels of the block's site shape, or a ``Graph``), verified.

    ``state`` gives the other blocks' names and shapes; their values are not used (discovery
    probes random points, so the graph does not depend on where the chains are).

    Raises:
        ValueError: a user colouring or graph that misses an interaction of the energy.
    """
    key = (cache_key(model, name, state), _coloring_key(coloring))
    cached = _CACHE.setdefault(model, {})
    entry = cached.get(name)
    if entry is not None and entry[0] == key:
        return entry[1]
    global _FIXED_BATCH
    fixed = [needs_fixed_batch(m, state) for m in _inner_models(model)]
    _FIXED_BATCH = next((f for f in fixed if f is not None), None)
    try:
        result = _build(model, name, state, coloring, seed)
    finally:
        _FIXED_BATCH = None
    result.fixed_batch = next((f for f in fixed if f is not None), None)
    cached[name] = (key, result, coloring)  # holding the colouring keeps its id from being reused
    return result


def _coloring_key(coloring: object) -> object:
    # identity, not content (no per-step cost); the cache entry holds the object alive
    return None if coloring is None else id(coloring)


def _context(model: EnergyModel, name: str, state: Mapping[str, torch.Tensor], generator) -> dict:
    # the other blocks at a random interior point: an interaction gated by another block
    # (E = h * x_i * x_j) is visible unless that block sits exactly at 0
    return {b: interior_point(model.variables[b], 1, generator, model.dtype, model.device) for b in state if b != name}


def _build(model: EnergyModel, name: str, state, coloring, seed: int) -> Structure:
    domain = model.variables[name]
    generator = torch.Generator().manual_seed(seed)
    inner = _inner_models(model)
    with torch.no_grad():
        context = _context(model, name, state, generator)
    found = [hessian_graph(m, name, context, generator) for m in inner]
    if all(f is not None for f in found):
        adjacency = torch.stack([f[0] for f in found]).any(0)
        affine, how = all(f[1] for f in found), "hessian"
    else:
        adjacency, affine, how = None, False, "discrete"
    if coloring is not None:
        result = _user(model, name, domain, coloring, context, adjacency, affine, generator)
        return _with_quadratic(result, inner, name, state, found, generator)
    if adjacency is not None:
        colors = groups(greedy_coloring(adjacency), model.device)
        problem = _verify_all(inner, name, context, colors, affine, generator)
        if problem is None:
            return _with_quadratic(Structure(colors, affine, adjacency, how), inner, name, state, found, generator)
        if affine:
            # the energy may still be smooth across sites but not affine: keep the graph, drop the shortcut
            affine = False
            if _verify_all(inner, name, context, colors, False, generator) is None:
                return Structure(colors, affine, adjacency, how)
    if domain.n_sites <= DISCRETE_LIMIT:
        adjacency = torch.stack([discrete_graph(m, name, context, generator) for m in inner]).any(0)
        colors = groups(greedy_coloring(adjacency), model.device)
        if _verify_all(inner, name, context, colors, False, generator) is None:
            return Structure(colors, False, adjacency, "discrete")
    warnings.warn(
        f"ebm.Gibbs could not find the interaction graph of block '{name}' ({domain.n_sites} sites): its energy "
        f"is not twice differentiable in the sites (abs, comparisons, integer casts?) and the block is too large "
        f"for exact discrete discovery (> {DISCRETE_LIMIT} sites); updating one site at a time "
        f"({domain.n_sites} energy evaluations a sweep). Write the energy with arithmetic on the states, or pass "
        f"ebm.Gibbs(coloring=...)",
        stacklevel=4,
    )
    n = domain.n_sites
    complete = torch.ones(n, n, dtype=torch.bool)
    complete.fill_diagonal_(False)
    return Structure([torch.tensor([i], device=model.device) for i in range(n)], False, complete, "complete")


def _with_quadratic(result: Structure, inner, name, state, found, generator) -> Structure:
    """``result`` with the Hessian rows of each colour when the energy is quadratic in the
    model's only block (one model, not a tempered view with a base)."""
    if not result.affine or len(inner) != 1 or set(state) != {name} or found[0] is None:
        return result
    model = inner[0]
    hessian = found[0][2]
    bias = quadratic_terms(model, name, {}, hessian, generator)
    if bias is None:
        return result
    domain = model.variables[name]
    k = domain.size // domain.n_sites
    rows = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        for sites in result.colors:
            entries = (sites.cpu().unsqueeze(1) * k + torch.arange(k)).reshape(-1)
            rows.append(hessian.index_select(0, entries).to(model.device).to_sparse_csr())
    result.rows, result.bias = rows, (bias if bool(bias.any()) else None)
    return result


def _user(model, name, domain, coloring, context, adjacency, affine, generator) -> Structure:
    inner = _inner_models(model)
    n_sites = domain.n_sites
    if isinstance(coloring, Graph):
        edges = torch.as_tensor(np.asarray(coloring.edges), dtype=torch.long).reshape(-1, 2)
        if len(edges) and (edges.min() < 0 or edges.max() >= n_sites):
            raise ValueError(f"Graph edges for block '{name}' must be flat site indices in [0, {n_sites})")
        given = torch.zeros(n_sites, n_sites, dtype=torch.bool)
        given[edges[:, 0], edges[:, 1]] = True
        given |= given.clone().T
        colors = groups(greedy_coloring(given), model.device)
        what = "graph"
    else:
        labels = torch.as_tensor(np.asarray(coloring))
        site_shape = domain.sites if isinstance(domain, Categorical) else domain.shape
        if tuple(labels.shape) != tuple(site_shape) or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(
                f"coloring for block '{name}' must be integer colour labels of shape {tuple(site_shape)} "
                f"(one per site) or an ebm.samplers.coloring.Graph, got {labels.dtype} of shape {tuple(labels.shape)}"
            )
        colors = groups(labels, model.device)
        what = "colouring"
    if adjacency is not None:
        bad = conflicts(adjacency, colors)
        if bad is not None:
            raise _wrong_coloring(name, domain, *bad, "found from the energy's second derivatives")
    problem = _verify_all(inner, name, context, colors, affine, generator)
    if problem is not None and affine:
        affine = False
        problem = _verify_all(inner, name, context, colors, False, generator)
    if problem is not None:
        raise ValueError(f"the {what} given to ebm.Gibbs for block '{name}' is wrong: {problem}")
    if adjacency is None and n_sites <= DISCRETE_LIMIT:
        exact = torch.stack([discrete_graph(m, name, context, generator) for m in inner]).any(0)
        bad = conflicts(exact, colors)
        if bad is not None:
            raise _wrong_coloring(name, domain, *bad, "found from its mixed second differences")
    return Structure(colors, affine, adjacency, "user")


def describe(s: Structure) -> str:
    """One line: colours, sizes, and how local differences are computed."""
    sizes = [len(c) for c in s.colors]
    return (
        f"{len(sizes)} colour(s) of {min(sizes)}-{max(sizes)} sites ({s.how}); local differences "
        f"{'from one gradient per colour' if s.affine else 'by exact batched evaluation'}"
    )


def n_evaluations(s: Structure, n_values: int) -> int:
    """Energy evaluations (per chain) of one sweep: one forward+backward per colour when
    affine, else ``(n_values - 1)`` per site plus one per colour."""
    if s.affine:
        return len(s.colors)
    return sum(len(c) * (n_values - 1) + 1 for c in s.colors)
