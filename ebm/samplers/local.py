"""Local energy differences and heat-bath updates of one colour of sites at a time.

For a colour ``c`` (sites that do not interact), each site's conditional given all other
sites is ``p(x_i = v | rest) ∝ exp(-E(x with x_i = v))``, and the sites are independent, so
all of them are drawn at once from their energy differences:

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

from collections.abc import Mapping

import torch

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


def quadratic_sweep(model, name: str, domain: Domain, state: dict[str, torch.Tensor], structure, generator) -> torch.Tensor:
    """One sweep over every colour of a block whose energy is quadratic in it (and the only
    block): local fields ``H_c x + b_c`` by one sparse product per colour, in a transposed
    ``(size, n)`` copy of the block so that a colour's entries are rows. A tempered view's
    β (scalar or per chain) scales them. Writes the block in ``state``; returns the
    per-chain count ``(n,)`` of colours whose fields had a NaN (those sites get arbitrary
    values; the warning says the draws are not to be used)."""
    from ebm.models.tempered import Tempered

    x = state[name]
    n = x.shape[0]
    xt = x.reshape(n, -1).T.contiguous()  # (size, n)
    beta = model.beta if isinstance(model, Tempered) else None
    k = domain.size // domain.n_sites
    count = torch.zeros(n, dtype=torch.long, device=x.device)
    arange_k = torch.arange(k, device=x.device)
    two_valued = not isinstance(domain, Categorical)
    if two_valued:
        down, up = domain.values
        # E(up) - E(down) = (up - down) * field: the logit of "up" is -(up - down) * field
        scale = -(up - down) if beta is None else -(up - down) * beta
    else:
        scale = -1.0 if beta is None else -beta
    for sites, rows in zip(structure.colors, structure.rows, strict=True):
        entries = sites if k == 1 else (sites.unsqueeze(1) * k + arange_k).reshape(-1)
        field = torch.sparse.mm(rows, xt)  # (|c|·k, n)
        if structure.bias is not None:
            field.add_(structure.bias.index_select(0, entries).unsqueeze(1))
        field.mul_(scale)  # now logits
        count += torch.isnan(field.sum(0))
        if two_valued:
            p_up = field.sigmoid_()
            new = torch.where(_uniform(p_up.shape, p_up, generator) < p_up, up, down).to(x.dtype)
        else:
            logits = field.reshape(len(sites), k, n)
            gumbel = _uniform(logits.shape, logits, generator).log_().neg_().log_().neg_()
            codes = _argmax_middle(logits.add_(gumbel))  # (|c|, n): Gumbel-max draws
            new = (codes.unsqueeze(1) == arange_k.view(1, k, 1)).to(x.dtype).reshape(-1, n)
        xt.index_copy_(0, entries, new)
    state[name] = xt.T.reshape(x.shape).contiguous()
    return count


def _argmax_middle(t: torch.Tensor) -> torch.Tensor:
    """``t.argmax(1)`` of ``(a, k, n)``; for small k by k contiguous comparisons (a strided
    reduction over the middle dimension is ~50x slower on the CPU)."""
    k = t.shape[1]
    if k > 8:
        return t.transpose(1, 2).contiguous().argmax(-1)
    best, index = t[:, 0], torch.zeros(t.shape[0], t.shape[2], dtype=torch.long, device=t.device)
    for v in range(1, k):
        better = t[:, v] > best
        best = torch.where(better, t[:, v], best)
        index.masked_fill_(better, v)
    return index


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
    from ebm.models.tempered import Tempered

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
