"""Local energy differences and heat-bath updates of one colour of sites at a time.

For a colour ``c`` (sites that do not interact), each site's conditional given all other
sites is ``p(x_i = v | rest) ∝ exp(-E(x with x_i = v))``, and the sites are independent, so
all of them are drawn at once from their energy differences:

- energies quadratic in their only block (Ising, spin glasses, one-hot Potts):
  ``quadratic_sweep`` computes the logits of a colour as one sparse product of the
  discovered Hessian rows with the block laid out sites-major, with no energy evaluation;
- ``affine`` energies (affine in every site: pairwise spin/binary models, the one-hot Potts
  form, any multilinear polynomial): ``E(x_i = v) - E(x) = (v - x_i) · ∂E/∂x_i``, so one
  forward and backward pass gives every difference of every site (for one-hot sites the
  q entries of the gradient are the q energies up to a constant). Discovery checks the
  energy is affine before this is used (``ebm.samplers.coloring``).
- otherwise (Curie–Weiss ``(Σ s)²``, ``x**2`` terms, non-smooth energies): exact batched
  evaluation of ``E`` with each site of the colour moved to each other value, all sites and
  values of the colour in one batch of ``n_chains · |c| · (k − 1)`` states (chunked):
  ``(k − 1)·|c|`` energies per chain and colour, ``(k − 1)·N`` a sweep.

NaN energy differences leave their site unchanged and are counted (per chain) so that
``ebm.sample`` can warn once at the end instead of syncing the host at every step.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from ebm.models.tempered import Tempered
from ebm.ops.bernoulli import bernoulli_
from ebm.samplers.coloring import sites_view
from ebm.variables import Categorical, Domain

#: entries (states x block size) of one exact-evaluation batch
EXACT_ENTRIES = 2**24


def affine_differences(
    model, name: str, domain: Domain, state: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E, ∂E/∂x)`` of block ``name`` at ``state``: ``(n,)`` and ``(n, N, k)`` (``sites_view``)."""
    x = state[name].detach().requires_grad_(True)
    with torch.enable_grad():
        energy = model.energy({**state, name: x})
        (grad,) = torch.autograd.grad(energy.sum(), x)
    return energy.detach(), sites_view(grad, domain)


def _uniform(shape, like: torch.Tensor, generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)


@dataclass
class _ColorRows:
    """One colour of a quadratic sweep: its entries (rows of the sites-major block), the
    Hessian rows of those entries scaled to logits (CSR ``(|c|·k, size)``) and the logits at
    ``x = 0`` ``(|c|·k, 1)`` (``None``: zero)."""

    entries: torch.Tensor
    rows: torch.Tensor
    bias: torch.Tensor | None


@dataclass
class QuadraticPlan:
    """What a quadratic sweep needs that depends only on the structure, built once per
    ``Structure``: per colour its rows scaled to logits (the heat-bath logit of "up" is
    ``-(up - down) · field``; of category ``v``, ``-field_v``), and the block's values.
    ``finite``: no logit can be NaN for states in the domain (finite rows and bias, and no
    sum of them can overflow), checked once here so that sweeps need not look for NaN.
    ``spare`` holds the ``_Workspace`` the last sweep left behind (see ``quadratic_sweep``)."""

    colors: list[_ColorRows]
    values: tuple[float, float] | None
    finite: bool
    spare: dict = field(default_factory=dict)


@dataclass
class _Workspace:
    """A sweep's buffers: the block sites-major ``xt`` ``(size, n)`` and one logits buffer
    per colour; after the sweep, the tensor it returned (a weak reference) and the version
    counters of that tensor and of ``xt``, which tell whether ``xt`` still equals it."""

    xt: torch.Tensor
    logits: list[torch.Tensor]
    returned: weakref.ref | None = None
    returned_version: int = -1
    xt_version: int = -1

    def holds(self, x: torch.Tensor) -> bool:
        """Whether ``xt`` is ``x`` sites-major: ``x`` is the tensor the last sweep returned and
        neither was written since."""
        return (
            self.returned is not None
            and self.returned() is x
            and x._version == self.returned_version
            and self.xt._version == self.xt_version
        )


def quadratic_plan(domain: Domain, structure) -> QuadraticPlan:
    """The ``QuadraticPlan`` of a structure with Hessian rows (cached on it)."""
    plan = structure.plan
    if plan is not None:
        return plan
    k = domain.size // domain.n_sites
    if isinstance(domain, Categorical):
        values, scale = None, -1.0
    else:
        values = tuple(float(v) for v in domain.values)
        scale = -(values[1] - values[0])
    colors = []
    for sites, rows in zip(structure.colors, structure.rows, strict=True):
        entries = sites if k == 1 else (sites.unsqueeze(1) * k + torch.arange(k, device=sites.device)).reshape(-1)
        bias = None if structure.bias is None else (scale * structure.bias.index_select(0, entries)).unsqueeze(1)
        colors.append(_ColorRows(entries, rows * scale, bias))
    structure.plan = QuadraticPlan(colors, values, _finite_logits(colors, values))
    return structure.plan


def _finite_logits(colors: list[_ColorRows], values: tuple[float, float] | None) -> bool:
    """Whether every logit ``rows @ x + bias`` is finite for any ``x`` with entries bounded by
    the domain's largest ``|value|``: the bound ``Σ|row| · max|x| + |bias|`` (in float64) is
    below a quarter of the dtype's largest number, leaving room for rounding."""
    largest = 1.0 if values is None else max(abs(v) for v in values)
    bounds = []
    for color in colors:
        values_ = color.rows.values().double()
        if values_.numel() and not bool(values_.isfinite().all()):
            return False
        row_sums = torch.zeros(color.rows.shape[0], dtype=torch.float64, device=values_.device)
        row_sums.index_add_(0, _row_ids(color.rows), values_.abs())
        bound = row_sums * largest
        if color.bias is not None:
            bound = bound + color.bias.double().abs().reshape(-1)
        bounds.append(bound.max() if bound.numel() else bound.new_zeros(()))
    limit = torch.finfo(colors[0].rows.dtype).max / 4 if colors else 0.0
    return bool(torch.stack(bounds).max() < limit) if bounds else True


def _row_ids(rows: torch.Tensor) -> torch.Tensor:
    """The row of each stored entry of a CSR matrix."""
    crow = rows.crow_indices()
    return torch.repeat_interleave(torch.arange(len(crow) - 1, device=crow.device), crow.diff())


def quadratic_sweep(
    model, domain: Domain, x: torch.Tensor, structure, generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One sweep over every colour of a block whose energy is quadratic in it (and the only
    block): per colour, the logits ``H_c x + b_c`` (scaled) by one sparse product with the
    block laid out sites-major ``(size, n)``, so that a colour's entries are rows and a
    product reads whole rows of chains; a tempered view's β (scalar or per chain) scales
    them. Two-valued sites are drawn by ``ebm.ops.bernoulli`` (exact, 16 random bits a
    site), categorical ones by inverse CDF from one uniform a site.

    ``x`` ``(n, *shape)`` is not modified; returns the new block (contiguous, same shape)
    and the per-chain count ``(n,)`` of colours whose logits had a NaN (those sites get
    the value ``down`` or category 0; the warning says the draws are not to be used), or
    ``None`` when no logit can be NaN (``QuadraticPlan.finite``, no tempering).

    The sites-major copy costs a transposition each way. The one the sweep ends with is
    kept on the plan with the tensor it returned, so that the next sweep from that very
    tensor (same object, not written to since) starts from it without transposing back.
    """
    plan = quadratic_plan(domain, structure)
    n = x.shape[0]
    size = domain.size
    work = _workspace(plan, x, n, size)
    xt = work.xt
    beta = model.beta if isinstance(model, Tempered) else None
    check = beta is not None or not plan.finite
    count = torch.zeros(n, dtype=torch.long, device=x.device) if check else None
    for color, logits in zip(plan.colors, work.logits, strict=True):
        if color.bias is None:
            torch.addmm(logits, color.rows, xt, beta=0, out=logits)  # (|c|·k, n); beta=0 ignores the old values
        else:
            torch.addmm(color.bias, color.rows, xt, out=logits)
        if beta is not None:
            logits.mul_(beta)
        if check:
            count += torch.isnan(logits.sum(0))
        if plan.values is None:
            new = _categorical_draw(logits.view(-1, domain.n_values, n), generator)
        else:
            new = _two_valued_draw(logits, plan.values, generator, check)
        xt.index_copy_(0, color.entries, new)
    out = torch.empty(n, size, dtype=x.dtype, device=x.device)
    out.copy_(xt.T)  # a 2-D transposed copy (a blocked kernel; 3-D is several times slower)
    out = out.view(x.shape)
    work.returned, work.returned_version, work.xt_version = weakref.ref(out), out._version, xt._version
    plan.spare[0] = work
    return out, count


def _workspace(plan: QuadraticPlan, x: torch.Tensor, n: int, size: int) -> _Workspace:
    """Buffers for a sweep from ``x``, the caller's to write: the last sweep's when there are
    (claimed atomically, so that two threads never share them) and fit ``x``, their ``xt``
    refilled from ``x`` unless it already holds it; else new ones."""
    work = plan.spare.pop(0, None)
    if work is None or work.xt.shape != (size, n) or work.xt.dtype != x.dtype or work.xt.device != x.device:
        xt = x.reshape(n, size).T.contiguous()
        logits = [torch.empty(len(c.entries), n, dtype=x.dtype, device=x.device) for c in plan.colors]
        return _Workspace(xt, logits)
    if not work.holds(x):
        work.xt.copy_(x.reshape(n, size).T)
    return work


def _two_valued_draw(logits: torch.Tensor, values: tuple[float, float], generator, nan: bool) -> torch.Tensor:
    """In place: ``up`` with probability ``sigmoid(logits)``, else ``down`` (also for a NaN
    logit, when ``nan`` says there may be one)."""
    down, up = values
    p = bernoulli_(logits.sigmoid_(), generator)  # 0/1, exact; NaN stays NaN
    if (down, up) != (0.0, 1.0):
        p.mul_(up - down).add_(down)
    return p.nan_to_num_(nan=down) if nan else p


def _categorical_draw(logits: torch.Tensor, generator) -> torch.Tensor:
    """One-hot draws ``(|c|·q, n)`` from the softmax over dim 1 of ``logits`` ``(|c|, q, n)``
    (overwritten), by inverse CDF with one uniform per site: category ``v`` when
    ``F_{v-1} <= u·F_{q-1} < F_v`` for the cumulative ``F`` of ``exp(logits - max)``.
    Slices over the q values keep every operation on contiguous ``(|c|, n)`` rows (a
    reduction over the middle dimension is many times slower on the CPU). A site with a
    NaN logit gets category 0."""
    q = logits.shape[1]
    top = logits[:, 0].clone()
    for v in range(1, q):
        torch.maximum(top, logits[:, v], out=top)
    cumulative = logits.sub_(top.unsqueeze(1)).exp_()
    for v in range(1, q):
        cumulative[:, v].add_(cumulative[:, v - 1])
    u = torch.rand(top.shape, generator=generator, dtype=top.dtype, device=top.device)
    u.mul_(cumulative[:, q - 1])
    # above[v] = (u >= F_v), non-increasing in v; one-hot: [1 - above_0, above_0 - above_1, ..., above_{q-2}]
    new = cumulative  # overwritten in place, value by value
    previous = None
    for v in range(q - 1):
        above = torch.ge(u, cumulative[:, v]).to(u.dtype)
        if previous is None:
            torch.sub(1.0, above, out=new[:, v])
        else:
            torch.sub(previous, above, out=new[:, v])
        previous = above
    new[:, q - 1] = previous
    return new.view(-1, logits.shape[2])


def update_color(
    model,
    name: str,
    domain: Domain,
    state: dict[str, torch.Tensor],
    sites: torch.Tensor,
    affine: bool,
    generator: torch.Generator | None,
    fixed_batch: int | None = None,
) -> torch.Tensor:
    """Redraw the sites ``sites`` (flat indices, one colour) of block ``name`` in place from
    their heat-bath conditionals; returns the per-chain count ``(n,)`` of NaN energies and
    energy differences met (a NaN difference leaves its site unchanged)."""
    x = sites_view(state[name], domain)  # a view: writing x writes the block
    if isinstance(domain, Categorical):
        if affine:
            energy, grad = affine_differences(model, name, domain, state)
            logits = -grad.index_select(1, sites)  # (n, |c|, q): the q energies up to a per-site constant
        else:
            logits = -_exact_energies(model, name, domain, state, sites, fixed_batch)
        bad = torch.isnan(logits).any(-1)
        gumbel = -(-_uniform(logits.shape, logits, generator).log()).log()
        codes = torch.where(bad, x.index_select(1, sites).argmax(-1), (logits + gumbel).argmax(-1))
        x.index_copy_(1, sites, torch.nn.functional.one_hot(codes, domain.n_values).to(x.dtype))
        count = bad.sum(1)
    else:
        current = x[..., 0].index_select(1, sites)
        flipped = domain.flip(current)
        if affine:
            energy, grad = affine_differences(model, name, domain, state)
            delta = (flipped - current) * grad[..., 0].index_select(1, sites)
        else:
            energies = _exact_energies(model, name, domain, state, sites, fixed_batch)  # (n, |c|, 2): current, flipped
            delta = energies[..., 1] - energies[..., 0]
        u = _uniform(delta.shape, delta, generator)
        # u < sigmoid(-delta) is false for NaN: the site keeps its value
        x[..., 0].index_copy_(1, sites, torch.where(u < torch.sigmoid(-delta), flipped, current))
        count = torch.isnan(delta).sum(1)
    if affine:
        # the gradient of a NaN branch of torch.where is 0, not NaN: count the energy itself
        count = count + torch.isnan(energy)
    return count


def repeated_energy(model, state: Mapping[str, torch.Tensor], repeat: int) -> torch.Tensor:
    """``model.energy(state)`` for a batch whose rows are ``repeat`` consecutive copies per
    chain: a tempered view's per-chain β is repeated alike."""
    if isinstance(model, Tempered) and model.beta.dim() == 1:
        beta = model.beta.repeat_interleave(repeat)
        e = beta * repeated_energy(model.model, state, repeat)
        if model.base is not None:
            e = e + (1 - beta) * repeated_energy(model.base, state, repeat)
        return e
    return model.energy(state)


def _exact_energies(
    model, name: str, domain: Domain, state: Mapping[str, torch.Tensor], sites: torch.Tensor, fixed_batch=None
):
    """``E`` with each site of ``sites`` set to each of its values, the others as in ``state``:
    ``(n, |c|, k)`` (two-valued: value 0 is the current one, 1 the flipped one; Categorical:
    value ``v`` is category ``v``). A model with per-chain parameters (``fixed_batch``) is
    evaluated one (site, value) at a time over all chains."""
    x = sites_view(state[name], domain)
    n = x.shape[0]
    k = domain.n_values
    if isinstance(domain, Categorical):
        values = torch.eye(k, dtype=x.dtype, device=x.device)  # (k, q)
    if fixed_batch is not None:
        return _exact_energies_per_chain(model, name, domain, state, sites)
    out = []
    per_state = max(1, domain.size)
    step = max(1, EXACT_ENTRIES // (per_state * n * k))
    for start in range(0, len(sites), step):
        chunk = sites[start : start + step]
        m = len(chunk)
        moved = x.unsqueeze(1).unsqueeze(1).repeat(1, m, k, 1, 1)  # (n, m, k, N, width)
        rows = torch.arange(m, device=x.device)
        if isinstance(domain, Categorical):
            moved[:, rows, :, chunk] = values  # indexed shape (m, n, k, q)
        else:
            moved[:, rows, 1, chunk] = domain.flip(x[:, chunk])
        batch = n * m * k
        rep = {
            b: v.unsqueeze(1).expand(n, m * k, *v.shape[1:]).reshape(batch, *v.shape[1:])
            for b, v in state.items()
            if b != name
        }
        energy = repeated_energy(model, {**rep, name: moved.reshape(batch, *domain.shape)}, m * k)
        out.append(energy.reshape(n, m, k))
    return torch.cat(out, 1)


def _exact_energies_per_chain(model, name, domain, state, sites):
    x = sites_view(state[name], domain)
    k = domain.n_values
    out = torch.empty(x.shape[0], len(sites), k, dtype=x.dtype, device=x.device)
    for a, site in enumerate(sites.tolist()):
        for v in range(k):
            moved = x.clone()
            if isinstance(domain, Categorical):
                moved[:, site] = 0
                moved[:, site, v] = 1
            elif v == 1:
                moved[:, site] = domain.flip(x[:, site])
            out[:, a, v] = model.energy({**state, name: moved.reshape(state[name].shape)})
    return out
