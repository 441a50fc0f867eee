"""Plots of chains, samples, models and training curves; every function returns a Figure.

Functions take ``Chains`` (or plain tensors / arrays laid out as ``(n_draws, n_chains,
...)``) and return a ``matplotlib.figure.Figure``. Figures are built without pyplot, so
nothing here touches the global backend or opens windows: save with ``fig.savefig(...)``.
Where a plot has a single panel, ``ax=`` draws into an existing ``Axes`` instead (the
returned Figure is then that Axes' figure).

What to plot from ``Chains`` is chosen with ``what``: a block name (with ``coords``
picking sites of the block, flat or multi-indices), ``"energy"``, a key of
``chains.stats`` (e.g. ``"accept_prob"``), a callable ``state -> (batch,)`` (evaluated
with ``chains.apply``), or a dict ``{label: any of these}`` / a list of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ebm import diagnostics
from ebm.chains import Chains

Source = Chains | torch.Tensor | np.ndarray | Mapping[str, Any]
What = None | str | Callable | Sequence | Mapping

# One look for every figure: light grid, no top/right spines, small type.
_STYLE = {
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "image.cmap": "viridis",
}
_PANEL = (3.2, 2.0)  # inches of one panel (width, height)
_MAX_POINTS = 2000  # scatter points drawn per panel; more only hides the density
_DEFAULT_SITES = 3
_NOT_METRICS = ("epoch", "time")  # history entries that are bookkeeping, not curves to plot by default


# ------------------------------------------------------------------ figure helpers
def _figure(nrows: int, ncols: int, ax: Axes | None = None, panel: tuple[float, float] = _PANEL):
    """A constrained-layout figure with a grid of axes, or ``ax`` alone when given."""
    if ax is not None:
        if nrows * ncols != 1:
            raise ValueError(f"ax= works only for a single panel; this plot needs {nrows}x{ncols} panels (omit ax)")
        return ax.figure, np.array([[ax]])
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    try:
        return torch.as_tensor(np.asarray(x, dtype=np.float64))
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what} must be a tensor or array, got {type(x).__name__}") from err


def _chain_colors(n: int) -> list:
    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


# ------------------------------------------------------------------ what to plot
def _site_label(name: str, index: tuple[int, ...]) -> str:
    return f"{name}[{', '.join(map(str, index))}]"


def _most_variable(x: torch.Tensor, k: int) -> list[int]:
    """Flat indices of the ``k`` sites of draws ``x`` ``(n_draws, n_chains, *shape)`` with the
    largest variance pooled over draws and chains, in index order. An image block's corner
    pixels are often constant: their traces say nothing and their autocorrelation is
    undefined. Ties go to the lower index, so equally variable sites give the first ``k``."""
    variance = x.detach().flatten(2).double().var(dim=(0, 1), correction=0).cpu()
    return sorted(torch.sort(variance, descending=True, stable=True).indices[:k].tolist())


def _sites(name: str, x: torch.Tensor, coords: Sequence | None) -> list[tuple[str, torch.Tensor]]:
    """Scalar series ``(n_draws, n_chains)`` of the chosen sites of block draws ``x``."""
    shape = tuple(x.shape[2:])
    if not shape:
        return [(name, x)]
    size = math.prod(shape)
    if coords is None:
        coords = _most_variable(x, _DEFAULT_SITES)
    out = []
    for c in coords:
        index = (c,) if isinstance(c, (int, np.integer)) else tuple(c)
        if len(index) == 1 and len(shape) > 1:
            if not 0 <= index[0] < size:
                raise IndexError(f"site {index[0]} is out of range for block '{name}' with {size} sites")
            index = tuple(int(i) for i in np.unravel_index(index[0], shape))
        if len(index) != len(shape) or any(not 0 <= i < s for i, s in zip(index, shape, strict=True)):
            raise IndexError(f"coordinate {c} does not fit block '{name}' of shape {shape}")
        out.append((_site_label(name, index), x[(slice(None), slice(None), *index)]))
    return out


def _from_chains(chains: Chains, what: What, coords: Sequence | None) -> list[tuple[str, torch.Tensor]]:
    if what is None:
        latent = [k for k in chains.keys() if k not in chains.observed]
        what = ["energy", *latent[:1]]
    if isinstance(what, Mapping):
        out = []
        for label, item in what.items():
            series = _from_chains(chains, item, coords)
            out += [(label if len(series) == 1 else f"{label}:{sub}", x) for sub, x in series]
        return out
    if isinstance(what, str):
        if what == "energy":
            return [("energy", chains.energy)]
        if what in chains:
            return _sites(what, chains[what], coords)
        if what in chains.stats:
            return [(what, chains.stats[what])]
        raise KeyError(
            f"nothing called '{what}' in these chains: blocks {list(chains.keys())}, 'energy', stats {list(chains.stats)}"
        )
    if callable(what):
        return [(getattr(what, "__name__", "f"), chains.apply(what))]
    if isinstance(what, Sequence):
        return [s for item in what for s in _from_chains(chains, item, coords)]
    raise TypeError(f"what must be a block name, 'energy', a stats key, a callable, or a list/dict of these; got {what!r}")


def _series(source: Source, what: What = None, coords: Sequence | None = None) -> list[tuple[str, torch.Tensor]]:
    """Resolve ``source``/``what`` into labelled scalar series of shape ``(n_draws, n_chains)``."""
    if isinstance(source, Chains):
        series = _from_chains(source, what, coords)
    elif isinstance(source, Mapping):
        series = [(str(k), _as_draws(_tensor(v, f"series '{k}'"), str(k))) for k, v in source.items()]
        series = [s for label, x in series for s in _sites(label, x, coords)]
    else:
        if what is not None and not isinstance(what, str):
            raise TypeError("with a tensor, what= can only be a label (functions of the state need Chains)")
        label = what or "x"
        series = _sites(label, _as_draws(_tensor(source, "draws"), label), coords)
    if not series:
        raise ValueError("nothing to plot")
    return [(label, x.detach().cpu().double()) for label, x in series]


def _as_draws(x: torch.Tensor, label: str) -> torch.Tensor:
    if x.dim() == 0:
        raise ValueError(f"'{label}' is a scalar; plots need draws laid out as (n_draws, n_chains, ...)")
    return x.unsqueeze(1) if x.dim() == 1 else x


# ------------------------------------------------------------------ chain plots
@matplotlib.rc_context(_STYLE)
def trace(
    chains: Source,
    what: What = None,
    coords: Sequence | None = None,
    *,
    max_chains: int = 8,
    burn_in: int | None = None,
    bins: int = 40,
    ax: Axes | None = None,
) -> Figure:
    """Trace plots: one row per scalar series, chains as lines (left), pooled histogram (right).

    Args:
        chains: ``Chains``, a tensor ``(n_draws, n_chains, ...)``, or ``{label: tensor}``.
        what: what to plot (see the module docstring); default: the energy and the
            most variable sites of the first sampled block.
        coords: sites of a block to plot (flat indices or index tuples); default the 3 that
            vary most (variance pooled over draws and chains), so constant sites are skipped.
        max_chains: at most this many chains are drawn (all are pooled in the histogram).
        burn_in: number of leading draws to shade as burn-in (for chains recorded with it).
        bins: histogram bins.
        ax: draw only the trace of a single series into this Axes.

    Returns:
        The Figure.
    """
    series = _series(chains, what, coords)
    fig, axes = _figure(len(series), 1 if ax is not None else 2, ax, panel=(3.6, 1.7))
    for row, (label, x) in enumerate(series):
        left = axes[row, 0]
        x = x[:, :max_chains]
        steps = np.arange(x.shape[0])
        for c, color in enumerate(_chain_colors(x.shape[1])):
            left.plot(steps, _numpy(x[:, c]), color=color, lw=0.6, alpha=0.8)
        if burn_in:
            left.axvspan(0, burn_in, color="0.5", alpha=0.2, lw=0, label="burn-in")
            if row == 0:
                left.legend(loc="upper right")
        left.set_xlabel("draw")
        left.set_ylabel(label)
        if ax is None:
            _distribution(axes[row, 1], _numpy(series[row][1][burn_in or 0 :]).ravel(), label, bins)
    return fig


def _distribution(a: Axes, values: np.ndarray, label: str, bins: int) -> None:
    """Histogram of pooled draws; bars of frequencies when they take only a few values."""
    levels, counts = np.unique(values, return_counts=True)
    if levels.size <= 10:
        width = 0.8 * (np.diff(levels).min() if levels.size > 1 else 1.0)
        a.bar(levels, counts / values.size, width=width, color="C0", alpha=0.7)
        a.set_ylabel("frequency")
    else:
        a.hist(values, bins=bins, density=True, color="C0", alpha=0.7)
        a.set_ylabel("density")
    a.set_xlabel(label)


@matplotlib.rc_context(_STYLE)
def autocorrelation(
    chains: Source,
    what: What = None,
    coords: Sequence | None = None,
    *,
    max_lag: int = 100,
    ax: Axes | None = None,
) -> Figure:
    """Autocorrelation against lag, averaged over chains, one line per series (ESS in the legend).

    Args:
        chains: ``Chains``, a tensor ``(n_draws, n_chains, ...)``, or ``{label: tensor}``.
        what: what to plot (see the module docstring); default: the energy and the
            most variable sites of the first sampled block.
        coords: sites of a block to plot (flat indices or index tuples); default the 3 that
            vary most (variance pooled over draws and chains), so constant sites are skipped.
        max_lag: largest lag shown, in draws.
        ax: draw into this Axes.
    """
    series = _series(chains, what, coords)
    fig, axes = _figure(1, 1, ax, panel=(4.5, 2.8))
    a = axes[0, 0]
    for label, x in series:
        rho = diagnostics.autocorrelation(x).mean(1)[: max_lag + 1]
        ess = diagnostics.ess(x).item() if x.shape[0] >= 2 else float("nan")
        a.plot(np.arange(rho.shape[0]), _numpy(rho), lw=1.2, label=f"{label} (ESS {ess:.0f})")
    a.axhline(0.0, color="0.3", lw=0.8)
    a.set_xlabel("lag (draws)")
    a.set_ylabel("autocorrelation")
    a.legend(loc="upper right")
    return fig


@matplotlib.rc_context(_STYLE)
def running_mean(
    chains: Source,
    what: What = None,
    coords: Sequence | None = None,
    *,
    max_chains: int = 8,
    ax: Axes | None = None,
) -> Figure:
    """Running mean of each series against draws: per chain (thin) and over all chains (bold),
    with a band of ±2 MCSE of the final estimate.

    Args:
        chains: ``Chains``, a tensor ``(n_draws, n_chains, ...)``, or ``{label: tensor}``.
        what: what to plot (see the module docstring); default: the energy and the
            most variable sites of the first sampled block.
        coords: sites of a block to plot (flat indices or index tuples); default the 3 that
            vary most (variance pooled over draws and chains), so constant sites are skipped.
        max_chains: at most this many single-chain curves are drawn.
        ax: draw into this Axes (single series only).
    """
    series = _series(chains, what, coords)
    fig, axes = _figure(len(series), 1, ax, panel=(4.5, 1.8))
    for row, (label, x) in enumerate(series):
        a = axes[row, 0]
        steps = np.arange(1, x.shape[0] + 1)
        per_chain = x.cumsum(0) / torch.as_tensor(steps, dtype=x.dtype).unsqueeze(1)
        for c, color in enumerate(_chain_colors(min(max_chains, x.shape[1]))):
            a.plot(steps, _numpy(per_chain[:, c]), color=color, lw=0.6, alpha=0.6)
        pooled = _numpy(per_chain.mean(1))
        a.plot(steps, pooled, color="k", lw=1.5, label="all chains")
        if x.shape[0] >= 2 and x.shape[1] * x.shape[0] >= 4:
            se = diagnostics.mcse(x).item()
            if math.isfinite(se):
                a.axhspan(pooled[-1] - 2 * se, pooled[-1] + 2 * se, color="k", alpha=0.12, lw=0, label="±2 MCSE")
        a.set_xlabel("draw")
        a.set_ylabel(f"mean of {label}")
        a.legend(loc="upper right")
    return fig


@matplotlib.rc_context(_STYLE)
def energy(
    chains: Chains | torch.Tensor | np.ndarray,
    *,
    reference: torch.Tensor | np.ndarray | None = None,
    max_chains: int = 8,
    burn_in: int | None = None,
    bins: int = 50,
    label: str = "energy",
) -> Figure:
    """Energy trace (left) and histogram of the pooled energies (right).

    ``Chains.energy`` is the energy of the full state, e.g. ``E(v, h)`` for an RBM. Data have
    no ``h``: to compare chains with data, plot the same quantity for both, e.g. the free
    energies ``chains.apply(lambda s: rbm.free_energy({"v": s["v"]}))`` against
    ``rbm.free_energy({"v": data})`` with ``label="free energy F(v)"`` (``F(v) ≤ E(v, h)``
    for every ``h``, so joint energies sit above the data's free energies even for a
    perfect sampler).

    Args:
        chains: ``Chains`` or energies ``(n_draws, n_chains)`` in nats.
        reference: optional values of the same quantity to compare with in the histogram,
            e.g. of the data, any shape (flattened).
        max_chains: at most this many chains are traced.
        burn_in: number of leading draws to shade as burn-in.
        bins: histogram bins.
        label: what the values are, for the axes (in nats).
    """
    e = chains.energy if isinstance(chains, Chains) else _tensor(chains, "energies")
    e = _as_draws(e.detach().cpu().double(), "energy")
    if e.dim() != 2:
        raise ValueError(f"energies must be (n_draws, n_chains), got shape {tuple(e.shape)}")
    fig, axes = _figure(1, 2, panel=(3.6, 2.4))
    left, right = axes[0]
    steps = np.arange(e.shape[0])
    for c, color in enumerate(_chain_colors(min(max_chains, e.shape[1]))):
        left.plot(steps, _numpy(e[:, c]), color=color, lw=0.6, alpha=0.8)
    if burn_in:
        left.axvspan(0, burn_in, color="0.5", alpha=0.2, lw=0, label="burn-in")
        left.legend(loc="upper right")
    left.set_xlabel("draw")
    left.set_ylabel(f"{label} (nats)")
    values = _numpy(e[burn_in or 0 :]).ravel()
    edges = np.histogram_bin_edges(values, bins=bins)
    right.hist(values, bins=edges, density=True, color="C0", alpha=0.7, label="chains")
    if reference is not None:
        ref = _numpy(_tensor(reference, "reference")).ravel()
        right.hist(
            ref,
            bins=np.histogram_bin_edges(np.concatenate([values, ref]), bins=bins),
            density=True,
            histtype="step",
            color="C3",
            lw=1.5,
            label="reference",
        )
        right.legend(loc="upper right")
    right.set_xlabel(f"{label} (nats)")
    right.set_ylabel("density")
    return fig


# ------------------------------------------------------------------ distributions of states
def _block_draws(source: Source, block: str | None, prefer_real: bool) -> tuple[str, torch.Tensor]:
    """``(name, draws (n_draws, n_chains, *shape))`` of a block of Chains, or a tensor as given."""
    if isinstance(source, Chains):
        latent = [k for k in source.keys() if k not in source.observed] or list(source.keys())
        if block is None:
            real = [k for k in latent if source[k].is_floating_point() and not _is_two_valued(source[k])]
            block = (real or latent)[0] if prefer_real else latent[0]
        return block, source[block].detach().cpu()
    if isinstance(source, Mapping):
        raise TypeError("give Chains or a tensor of states")
    return block or "x", _tensor(source, "states")


def _is_two_valued(x: torch.Tensor) -> bool:
    sample = x.reshape(-1)[:10_000]
    return torch.unique(sample).numel() <= 2


@matplotlib.rc_context(_STYLE)
def marginals(
    chains: Source,
    block: str | None = None,
    coords: Sequence[int] | None = None,
    *,
    max_dims: int = 4,
    bins: int = 40,
    reference: torch.Tensor | np.ndarray | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Pair plot of a (Real) block: marginal histograms on the diagonal, scatter below it.

    Args:
        chains: ``Chains`` (all draws of all chains are pooled) or states ``(n, d)`` /
            ``(n_draws, n_chains, d)`` (any trailing shape is flattened to ``d`` sites).
        block: the block to plot (default: the first sampled ``Real`` block).
        coords: flat indices of the sites to show (default the first ``max_dims``).
        max_dims: at most this many sites when ``coords`` is not given.
        bins: histogram bins.
        reference: optional states ``(m, d)`` drawn from the true distribution, overlaid
            as outlines/points for comparison.
        ax: draw into this Axes (one site only).
    """
    name, x = _block_draws(chains, block, prefer_real=True)
    flat_from = 2 if isinstance(chains, Chains) or x.dim() >= 3 else 1
    x = x.flatten(flat_from).flatten(0, flat_from - 1).double() if x.dim() > 1 else x.double().unsqueeze(1)
    coords = list(coords) if coords is not None else list(range(min(max_dims, x.shape[1])))
    bad = [c for c in coords if not 0 <= c < x.shape[1]]
    if bad:
        raise IndexError(f"sites {bad} out of range for '{name}' with {x.shape[1]} sites")
    x = x[:, coords]
    ref = None
    if reference is not None:
        ref = _tensor(reference, "reference").double()
        ref = ref.reshape(-1, 1) if ref.dim() == 1 else ref.reshape(ref.shape[0], -1)
        ref = ref[:, coords]
    d = len(coords)
    fig, axes = _figure(d, d, ax, panel=(2.2, 2.0))
    shown = _subsample(x, _MAX_POINTS)
    labels = [f"{name}[{c}]" for c in coords]
    for i in range(d):
        for j in range(d):
            a = axes[i, j]
            if j > i:
                a.set_axis_off()
                continue
            if i == j:
                edges = np.histogram_bin_edges(_numpy(x[:, i]), bins=bins)
                a.hist(_numpy(x[:, i]), bins=edges, density=True, color="C0", alpha=0.7, label="chains")
                if ref is not None:
                    a.hist(
                        _numpy(ref[:, i]), bins=edges, density=True, histtype="step", color="C3", lw=1.2, label="reference"
                    )
                a.set_ylabel("density")
            else:
                a.scatter(_numpy(shown[:, j]), _numpy(shown[:, i]), s=3, alpha=0.3, color="C0", lw=0)
                if ref is not None:
                    r = _subsample(ref, _MAX_POINTS // 4)
                    a.scatter(_numpy(r[:, j]), _numpy(r[:, i]), s=3, alpha=0.5, color="C3", lw=0)
                a.set_ylabel(labels[i])
            a.set_xlabel(labels[j])
    if ref is not None:
        axes[0, 0].legend(loc="upper right")
    return fig


def _subsample(x: torch.Tensor, n: int) -> torch.Tensor:
    if x.shape[0] <= n:
        return x
    index = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:n]
    return x[index]


# ------------------------------------------------------------------ images
def _image_shape(size: int, shape: tuple[int, ...], image_shape: Sequence[int] | None, name: str) -> tuple[int, int]:
    if image_shape is not None:
        image_shape = tuple(int(s) for s in image_shape)
        if len(image_shape) != 2 or math.prod(image_shape) != size:
            raise ValueError(f"image_shape {image_shape} does not hold the {size} sites of '{name}'")
        return image_shape
    if len(shape) == 2:
        return shape
    side = math.isqrt(size)
    if side * side != size:
        raise ValueError(f"'{name}' has {size} sites, not a square number: give image_shape=(height, width)")
    return side, side


def _mosaic(images: np.ndarray, nrow: int | None, pad_value: float) -> np.ndarray:
    """Tile ``(n, h, w)`` images into one array with a 1-pixel border."""
    n, h, w = images.shape
    ncol = nrow or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncol)
    out = np.full((nrows * (h + 1) + 1, ncol * (w + 1) + 1), pad_value)
    for k in range(n):
        r, c = divmod(k, ncol)
        out[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = images[k]
    return out


def _image_grid(
    images: np.ndarray, ax: Axes | None, title: str, cmap: str, vmin: float, vmax: float, nrow: int | None, pad: float
) -> Figure:
    n = images.shape[0]
    ncol = nrow or math.ceil(math.sqrt(n))
    aspect = images.shape[1] * math.ceil(n / ncol) / (images.shape[2] * ncol)
    fig, axes = _figure(1, 1, ax, panel=(5.0, max(2.0, 5.0 * aspect)))
    a = axes[0, 0]
    a.imshow(_mosaic(images, nrow, pad), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    a.set_xticks([])
    a.set_yticks([])
    a.grid(False)
    for spine in a.spines.values():
        spine.set_visible(False)
    a.set_title(title)
    return fig


@matplotlib.rc_context(_STYLE)
def samples(
    x: Chains | torch.Tensor | np.ndarray,
    block: str | None = None,
    *,
    n: int = 64,
    draw: int = -1,
    image_shape: Sequence[int] | None = None,
    nrow: int | None = None,
    cmap: str = "gray",
    ax: Axes | None = None,
) -> Figure:
    """A grid of states shown as images (e.g. RBM samples of digits).

    Args:
        x: ``Chains`` (one image per chain at draw ``draw``), or states ``(n, *shape)``.
        block: the block to show (default: the first sampled block).
        n: at most this many images.
        draw: which draw of ``Chains`` to show (default the last).
        image_shape: ``(height, width)`` of one image; default the block's 2-D shape, or a
            square when the number of sites is a square.
        nrow: images per row (default: a square grid).
        cmap: colormap; values are shown on the range of the states (0..1 for binary; the
            codes 0..q-1 for one-hot ``Categorical`` lattices ``(n, H, W, q)``).
        ax: draw into this Axes.
    """
    if isinstance(x, Chains):
        name, draws = _block_draws(x, block, prefer_real=False)
        states = draws[draw]
        where = f"draw {draw % draws.shape[0]}"
    else:
        name, states = block or "x", _tensor(x, "states")
        where = ""
        if states.dim() < 2:
            raise ValueError(f"states must be (n, *shape), got shape {tuple(states.shape)}")
    states = states[:n].double()
    if states.dim() == 4 and bool(((states == 0) | (states == 1)).all()) and bool((states.sum(-1) == 1).all()):
        states = states.argmax(-1).double()  # one-hot Categorical sites (n, H, W, q): show the codes
    shape = tuple(states.shape[1:])
    h, w = _image_shape(math.prod(shape), shape, image_shape, name)
    images = _numpy(states.reshape(-1, h, w))
    low, high = float(images.min()), float(images.max())
    if high == low:
        high = low + 1.0
    title = f"{images.shape[0]} samples of '{name}'" + (f", {where}" if where else "")
    return _image_grid(images, ax, title, cmap, low, high, nrow, pad=(low + high) / 2)


@matplotlib.rc_context(_STYLE)
def filters(
    model_or_weights: torch.nn.Module | torch.Tensor | np.ndarray,
    *,
    n: int = 64,
    image_shape: Sequence[int] | None = None,
    nrow: int | None = None,
    cmap: str = "RdBu_r",
    ax: Axes | None = None,
) -> Figure:
    """RBM weights as images: column ``j`` of ``W`` (the filter of hidden unit ``j``) per tile.

    Each filter is scaled by its own largest ``|w|`` so that the colormap's centre is 0.

    Args:
        model_or_weights: a model with a weight matrix ``W`` ``(n_visible, n_hidden)``, or
            that matrix.
        n: at most this many filters (the first ``n`` hidden units).
        image_shape: ``(height, width)`` of a visible image (default: square).
        nrow: filters per row (default: a square grid).
        cmap: a diverging colormap.
        ax: draw into this Axes.
    """
    W = getattr(model_or_weights, "W", model_or_weights)
    W = _tensor(W, "weights").double()
    if W.dim() != 2:
        raise ValueError(f"weights must be a matrix (n_visible, n_hidden), got shape {tuple(W.shape)}")
    h, w = _image_shape(W.shape[0], (W.shape[0],), image_shape, "W")
    tiles = W.T[:n]
    tiles = tiles / tiles.abs().amax(1, keepdim=True).clamp_min(1e-12)
    images = _numpy(tiles.reshape(-1, h, w))
    title = f"filters of {images.shape[0]} hidden units (each scaled to its max |w|)"
    return _image_grid(images, ax, title, cmap, -1.0, 1.0, nrow, pad=0.0)


# ------------------------------------------------------------------ models
def _energy_function(model: Any, block: str | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function ``(N, 2) -> (N,)`` energies (or free energies) of a model's 2-D block."""
    from ebm.model import EnergyModel

    if not isinstance(model, EnergyModel):
        if not callable(model):
            raise TypeError(f"density_2d needs an EnergyModel or a callable (N, 2) -> (N,), got {type(model).__name__}")
        return model
    variables = model.variables
    if block is None:
        two_d = [k for k, d in variables.items() if tuple(d.shape) == (2,)]
        if len(two_d) != 1:
            raise ValueError(f"name the 2-D block with block=; the model's blocks are {variables}")
        block = two_d[0]
    if tuple(variables[block].shape) != (2,):
        raise ValueError(f"block '{block}' has shape {tuple(variables[block].shape)}, density_2d needs shape (2,)")
    if len(variables) == 1:
        return lambda x: model.energy({block: x})
    return lambda x: model.free_energy({block: x})


@matplotlib.rc_context(_STYLE)
def density_2d(
    model: Any,
    samples: Chains | torch.Tensor | np.ndarray | None = None,
    *,
    block: str | None = None,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    resolution: int = 200,
    log: bool = False,
    ax: Axes | None = None,
) -> Figure:
    """The density ``exp(-E(x)) / Z`` of a 2-D model on a grid, with samples overlaid.

    ``Z`` is the grid's Riemann sum, so the colour scale is a density only as far as the
    grid covers the mass.

    Args:
        model: an ``EnergyModel`` with one ``(2,)`` block (with other blocks, its
            ``free_energy`` sums them out), or a callable ``(N, 2) -> (N,)`` energies in nats.
        samples: ``Chains`` or points ``(n, 2)`` / ``(n_draws, n_chains, 2)`` to scatter.
        block: the model's 2-D block (needed when there are several).
        xlim: limits of the grid's first coordinate (default: from the samples' range, else ±4).
        ylim: limits of the second coordinate (default as for ``xlim``).
        resolution: grid points per axis.
        log: show ``-E - log Z`` (log density) instead of the density.
        ax: draw into this Axes.
    """
    f = _energy_function(model, block)
    points = None
    if samples is not None:
        if isinstance(samples, Chains):
            _, pts = _block_draws(samples, block, prefer_real=True)
        else:
            pts = _tensor(samples, "samples")
        if pts.shape[-1] != 2:
            raise ValueError(f"samples must have 2 coordinates in the last dim, got shape {tuple(pts.shape)}")
        points = _numpy(_subsample(pts.reshape(-1, 2), _MAX_POINTS))
    xlim = xlim or _limits(points, 0)
    ylim = ylim or _limits(points, 1)
    gx = np.linspace(*xlim, resolution)
    gy = np.linspace(*ylim, resolution)
    xx, yy = np.meshgrid(gx, gy)
    grid = np.stack([xx.ravel(), yy.ravel()], 1)
    dtype = getattr(model, "dtype", torch.get_default_dtype())
    device = getattr(model, "device", torch.device("cpu"))
    with torch.no_grad():
        e = f(torch.as_tensor(grid, dtype=dtype, device=device))
    e = _numpy(e).reshape(resolution, resolution)
    cell = (gx[1] - gx[0]) * (gy[1] - gy[0])
    log_p = -e - (np.logaddexp.reduce(-e.ravel()) + np.log(cell))
    values = log_p if log else np.exp(log_p)
    fig, axes = _figure(1, 1, ax, panel=(4.2, 3.6))
    a = axes[0, 0]
    mesh = a.pcolormesh(gx, gy, values, shading="auto", cmap="viridis")
    fig.colorbar(mesh, ax=a, label="log density" if log else "density")
    if points is not None:
        a.scatter(points[:, 0], points[:, 1], s=3, color="w", alpha=0.5, lw=0, label="samples")
        a.legend(loc="upper right", labelcolor="w")
    a.set_xlim(xlim)
    a.set_ylim(ylim)
    a.grid(False)
    a.set_xlabel("x[0]")
    a.set_ylabel("x[1]")
    return fig


def _limits(points: np.ndarray | None, dim: int) -> tuple[float, float]:
    if points is None:
        return -4.0, 4.0
    low, high = np.quantile(points[:, dim], [0.001, 0.999])
    margin = 0.15 * (high - low) + 1e-6
    return float(low - margin), float(high + margin)


# ------------------------------------------------------------------ training
def _number(value: Any) -> float:
    """A metric value as a float (NaN for a missing one); ``TypeError`` for non-numbers."""
    if value is None:
        return float("nan")
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (int, float, np.number)):
        return float(value)
    raise TypeError(f"not a number: {value!r}")


def _history_columns(history: Any) -> dict[str, list[float]]:
    """``{metric: values per epoch}`` of the numeric metrics, ``"epoch"`` first when present."""
    if isinstance(history, Mapping):
        columns = {str(k): list(v) for k, v in history.items()}
    elif isinstance(history, Sequence) and history and all(isinstance(r, Mapping) for r in history):
        keys = list(dict.fromkeys(k for r in history for k in r))
        columns = {str(k): [r.get(k) for r in history] for k in keys}
    else:
        raise TypeError(f"history must be a non-empty list of per-epoch dicts or a dict of lists, got {history!r:.80}")
    numeric = {}
    for key, values in columns.items():
        try:
            numeric[key] = [_number(v) for v in values]
        except TypeError:
            continue
    return numeric


@matplotlib.rc_context(_STYLE)
def history(history: Any, keys: Sequence[str] | None = None, *, ax: Axes | None = None) -> Figure:
    """Training curves: one panel per metric against the epoch.

    Args:
        history: what ``ebm.fit`` returns: a list of per-epoch dicts or a dict of lists
            (non-numeric entries are skipped, ``None`` marks an epoch without that metric;
            an ``"epoch"`` entry gives the x axis).
        keys: the metrics to plot (default: all numeric ones but ``"time"``).
        ax: draw into this Axes (one metric only).
    """
    columns = _history_columns(history)
    epochs = columns.pop("epoch", None)
    if keys is None:
        keys = [k for k in columns if k not in _NOT_METRICS]
    keys = list(keys)
    missing = [k for k in keys if k not in columns]
    if missing:
        raise KeyError(f"history has no numeric metric(s) {missing}; it has {list(columns)}")
    if not keys:
        raise ValueError(f"history has no numeric metrics to plot (keys: {list(columns)})")
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = _figure(nrows, ncols, ax, panel=(3.0, 2.2))
    for k, key in enumerate(keys):
        a = axes.flat[k]
        y = np.asarray(columns[key])
        x = np.asarray(epochs) if epochs is not None and len(epochs) == len(y) else np.arange(1, len(y) + 1)
        shown = np.isfinite(y)  # metrics evaluated on some epochs only are None elsewhere
        a.plot(x[shown], y[shown], marker="o" if shown.sum() <= 30 else None, ms=3, lw=1.2)
        a.set_xlabel("epoch")
        a.set_ylabel(key)
    for a in axes.flat[len(keys) :]:
        a.set_axis_off()
    return fig
