"""scikit-learn estimators backed by ``ebm``'s RBMs and ``ebm.Trainer`` (``pip install "ebm[sklearn]"``).

``BernoulliRBM`` takes scikit-learn's constructor parameters and fitted attributes
(``n_components``, ``learning_rate``, ``batch_size``, ``n_iter``, ``verbose``,
``random_state``; ``components_``, ``intercept_hidden_``, ``intercept_visible_``,
``h_samples_``) and adds ``ebm``'s own (``method``, ``k``, ``n_chains``, ``device``), so that
``from ebm.sklearn import BernoulliRBM`` drops into a ``Pipeline`` in place of
``sklearn.neural_network.BernoulliRBM``. ``GaussianRBM`` does the same for real-valued
features.

What is the same as scikit-learn: plain SGD at ``learning_rate`` on the batch-mean gradient,
a constant rate, PCD-1 with ``batch_size`` persistent chains, negatives' hidden units
Rao-Blackwellised (their probabilities, not draws), inputs as NumPy arrays or SciPy sparse
matrices in float32 or float64 (the fitted attributes and ``transform`` keep the dtype).
What differs: the visible biases start at the data's log-odds (as ``ebm.fit``'s
``init_bias``); ``score_samples`` is the exact pseudo-log-likelihood (every unit flipped in
turn, not one random unit); ``log_likelihood`` gives the log-likelihood itself (exact, or by
AIS); ``model_`` is the trained ``ebm`` model, for ``ebm.sample``, ``ebm.log_likelihood``, ...

Training: ``solver="trainer"`` runs ``ebm.Trainer`` (``trainer_``; any ``ebm`` sampler
machinery, per-epoch loss in ``history_``). ``BernoulliRBM``'s default ``solver="fused"``
does the same updates (tested against ``Trainer``'s gradient) in a dozen in-place tensor
operations per batch: on scikit-learn's batches of 10 rows the generic trainer's per-update
overhead (autograd, optimizer, sampler bookkeeping) is ~10x scikit-learn's whole update.
"""

from __future__ import annotations

import numbers
import time
import warnings
from typing import Any

import numpy as np
import torch

try:
    import scipy.sparse as sp
    from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
    from sklearn.utils import check_random_state
    from sklearn.utils._param_validation import Interval, StrOptions
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError('ebm.sklearn needs scikit-learn >= 1.6: pip install "ebm[sklearn]"') from err

from ebm.evaluation.metrics import log_likelihood
from ebm.evaluation.partition import log_partition
from ebm.evaluation.pseudo import pseudo_log_likelihood
from ebm.model import DataWarning, EnergyModel
from ebm.models.gaussian_rbm import GaussianRBM as _GaussianModel
from ebm.models.rbm import RBM
from ebm.samplers.gibbs import draw
from ebm.training.trainer import Trainer, TrainingDiverged
from ebm.variables import Binary, Domain

__all__ = ["BernoulliRBM", "GaussianRBM", "MeanFieldRBM"]

_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


class Probabilities(Binary):
    """Binary units whose data may also be given as probabilities of 1, scikit-learn's
    convention for ``BernoulliRBM`` (grey pixels scaled to [0, 1]). Samplers draw 0 or 1; data
    enter the mean-field formulas (free energy, ``p(h | v)``) as they are."""

    def validate(self, name: str, x: torch.Tensor) -> None:
        Domain.validate(self, name, x)  # finite values only: [0, 1] is checked (with a warning) at the estimator


class MeanFieldRBM(RBM):
    """``ebm.RBM`` whose visible data may be probabilities in [0, 1] (``Probabilities``)."""

    def __init__(self, n_visible: int, n_hidden: int, init_std: float = 0.01, seed: int | None = None):
        super().__init__(n_visible, n_hidden, init_std, seed)
        self._variables["v"] = Probabilities(n_visible)


class _RBMEstimator(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """What ``BernoulliRBM`` and ``GaussianRBM`` share: validation, training, transform, Gibbs."""

    _parameter_constraints: dict = {  # noqa: RUF012 - scikit-learn's convention
        "n_components": [Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_iter": [Interval(numbers.Integral, 0, None, closed="left")],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
        "method": [StrOptions({"pcd", "cd"})],
        "k": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_chains": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "device": [str, torch.device],
    }

    def _store(self, arguments: dict) -> None:
        """Keep each constructor argument as it is, under its name (scikit-learn's convention)."""
        for name, value in arguments.items():
            if name not in ("self", "__class__"):
                setattr(self, name, value)

    # ------------------------------------------------------------------ to implement
    def _make_model(self, n_features: int, seed: int) -> EnergyModel:
        raise NotImplementedError

    def _to_model_space(self, v: torch.Tensor) -> torch.Tensor:
        return v

    def _from_model_space(self, v: torch.Tensor) -> torch.Tensor:
        return v

    def _check_values(self, X) -> None:
        """Warn or raise for values the model does not take (after scikit-learn's checks)."""

    def _set_statistics(self, X) -> None:
        """Fix what ``_to_model_space`` needs from the first training data."""

    def _publish(self) -> None:
        """Copy the model's parameters into the fitted attributes (NumPy, the data's dtype)."""
        model, dtype = self.model_, self._dtype
        self.components_ = model.W.detach().T.cpu().numpy().astype(dtype)
        self.intercept_hidden_ = model.b.detach().cpu().numpy().astype(dtype)
        self.intercept_visible_ = model.a.detach().cpu().numpy().astype(dtype)
        chains = self._engine.hidden_chains
        if chains is not None:
            self.h_samples_ = chains.cpu().numpy().astype(dtype)
        self.history_ = self._engine.history

    # ------------------------------------------------------------------ helpers
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def _validate(self, X, reset: bool):
        X = validate_data(self, X, accept_sparse=("csr", "csc", "coo"), dtype=(np.float64, np.float32), reset=reset)
        self._check_values(X)
        return X

    def _tensor(self, X) -> torch.Tensor:
        """``X`` as a dense tensor in the model's dtype, on its device, in model space."""
        dense = X.toarray() if sp.issparse(X) else X
        # torch.tensor copies, so read-only inputs (memory maps) are fine
        v = torch.tensor(dense, dtype=_DTYPES[np.dtype(self._dtype)], device=self.device)
        return self._to_model_space(v)

    def _start(self, X) -> None:
        for stale in ("trainer_", "h_samples_"):  # from an earlier fit with another solver or method
            self.__dict__.pop(stale, None)
        self._dtype = X.dtype
        self._set_statistics(X)
        self.random_state_ = check_random_state(self.random_state)
        seed = int(self.random_state_.randint(np.iinfo(np.int32).max))
        self.model_ = self._make_model(X.shape[1], seed).to(device=self.device, dtype=_DTYPES[np.dtype(X.dtype)])
        self._engine = self._make_engine(self.model_, seed)
        if isinstance(self._engine, _TrainerEngine):
            self.trainer_ = self._engine.trainer

    def _make_engine(self, model: EnergyModel, seed: int):
        return _TrainerEngine(model, self, seed)

    def _train(self, X, epochs: int) -> None:
        self._engine.train(self._tensor(X), epochs)
        self._publish()

    # ------------------------------------------------------------------ scikit-learn API
    def fit(self, X, y=None):
        """Train on ``X`` ``(n_samples, n_features)`` for ``n_iter`` epochs from a fresh model.

        Returns:
            self.
        """
        self._validate_params()
        X = self._validate(X, reset=True)
        self._start(X)
        self._train(X, self.n_iter)
        return self

    def partial_fit(self, X, y=None):
        """One epoch over ``X`` (in batches of ``batch_size``), continuing the model, the
        optimizer and the persistent chains of the previous calls (a fresh model on the first).

        Returns:
            self.
        """
        first = not hasattr(self, "model_")
        if first:
            self._validate_params()
        X = self._validate(X, reset=first)
        if first:
            self._start(X)
        self._train(X, 1)
        return self

    def transform(self, X) -> np.ndarray:
        """Hidden-unit probabilities ``p(h = 1 | v = x)``, shape ``(n_samples, n_components)``,
        in the dtype of ``X`` (float32 or float64)."""
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        model = self.model_
        with torch.no_grad():
            probs = model.conditional("h", {"v": self._tensor(X)}).probs
        return probs.cpu().numpy().astype(X.dtype, copy=False)

    def gibbs(self, v) -> np.ndarray:
        """One Gibbs step from visible rows ``v`` ``(n_samples, n_features)``: ``h ~ p(h | v)``,
        then ``v' ~ p(v | h)``; returns ``v'`` in the dtype of ``v``. Draws from
        ``random_state_``, as scikit-learn's does."""
        check_is_fitted(self)
        X = self._validate(v, reset=False)
        model = self.model_
        generator = torch.Generator(device=model.device).manual_seed(int(self.random_state_.randint(2**31 - 1)))
        with torch.no_grad():
            h = draw(model.conditional("h", {"v": self._tensor(X)}), model.variables["h"], generator)
            v_new = draw(model.conditional("v", {"h": h}), model.variables["v"], generator)
        return self._from_model_space(v_new).cpu().numpy().astype(X.dtype, copy=False)

    def log_likelihood(self, X, method: str = "exact", **kwargs: Any) -> np.ndarray:
        """Per-row log-likelihood ``log p(x)`` in nats, shape ``(n_samples,)``.

        Args:
            X: rows ``(n_samples, n_features)``.
            method: ``"exact"`` (log Z by enumerating the smaller layer: up to ~2^25 states)
                or ``"ais"`` (annealed importance sampling; ``**kwargs`` go to
                ``ebm.log_partition``, e.g. ``n_betas``, ``n_runs``, ``seed``).

        Raises:
            ValueError: ``method="exact"`` on a model too large to enumerate.
        """
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        model = self.model_
        v = self._tensor(X)
        log_z = log_partition(model, method=method, **kwargs)
        ll = log_likelihood(model, {"v": v}, log_z=log_z) + self._log_jacobian()
        return ll.cpu().numpy().astype(X.dtype, copy=False)

    def _log_jacobian(self) -> float:
        return 0.0


class BernoulliRBM(_RBMEstimator):
    """Bernoulli RBM with scikit-learn's interface, trained by ``ebm.Trainer``.

    Parameters, fitted attributes and defaults are those of
    ``sklearn.neural_network.BernoulliRBM``, plus ``ebm``'s own.

    Args:
        n_components: number of hidden units.
        learning_rate: SGD step on the batch-mean gradient (constant, no momentum).
        batch_size: rows per update.
        n_iter: epochs over the data in ``fit``.
        verbose: show a progress bar with the loss per epoch.
        random_state: seed (int), ``RandomState`` or ``None``: the weights, the batches,
            the chains and ``gibbs`` all draw from it.
        method: ``"pcd"`` (persistent chains, scikit-learn's) or ``"cd"``.
        k: Gibbs sweeps per update.
        n_chains: persistent chains (``None``: ``batch_size``, as scikit-learn).
        device: torch device of the model (``"cpu"``, ``"cuda"``, ...).
        solver: ``"fused"`` (closed-form updates, fast on small batches) or ``"trainer"``
            (``ebm.Trainer``): the same updates.

    Data: values are probabilities of 1 in [0, 1] (binary data, or e.g. pixels scaled by
    ``minmax_scale``), as scikit-learn takes them; values outside [0, 1] warn
    ``ebm.model.DataWarning`` and are used as they are.

    Fitted attributes:
        components_: ``(n_components, n_features)`` weights (``W.T``).
        intercept_hidden_: ``(n_components,)``; intercept_visible_: ``(n_features,)``.
        h_samples_: ``(n_chains, n_components)`` hidden states of the persistent chains (PCD).
        model_: the trained ``MeanFieldRBM``; history_: per-epoch time (and loss with
            ``solver="trainer"``); trainer_: the ``ebm.Trainer`` (``solver="trainer"`` only).
    """

    def __init__(
        self,
        n_components: int = 256,
        *,
        learning_rate: float = 0.1,
        batch_size: int = 10,
        n_iter: int = 10,
        verbose: int = 0,
        random_state=None,
        method: str = "pcd",
        k: int = 1,
        n_chains: int | None = None,
        device: str | torch.device = "cpu",
        solver: str = "fused",
    ):
        self._store(locals())

    _parameter_constraints: dict = {  # noqa: RUF012
        **_RBMEstimator._parameter_constraints,
        "solver": [StrOptions({"fused", "trainer"})],
    }

    def _make_model(self, n_features: int, seed: int) -> EnergyModel:
        return MeanFieldRBM(n_features, self.n_components, seed=seed)

    def _make_engine(self, model: EnergyModel, seed: int):
        if self.solver == "fused":
            return _FusedEngine(model, self, seed)
        return _TrainerEngine(model, self, seed)

    def _check_values(self, X) -> None:
        data = X.data if sp.issparse(X) else X
        if data.size and (data.min() < 0 or data.max() > 1):
            warnings.warn(
                f"BernoulliRBM takes values in [0, 1] (probabilities of 1); X has values in "
                f"[{data.min():.3g}, {data.max():.3g}]: scale it first, e.g. with sklearn.preprocessing.minmax_scale",
                DataWarning,
                stacklevel=4,
            )

    def score_samples(self, X) -> np.ndarray:
        """Pseudo-log-likelihood ``Σᵢ log p(xᵢ | x₋ᵢ)`` per row, in nats, shape ``(n_samples,)``,
        summed exactly over every unit (scikit-learn estimates it from one random unit per
        row, times ``n_features``)."""
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        pll = pseudo_log_likelihood(self.model_, {"v": self._tensor(X)})
        return pll.cpu().numpy().astype(X.dtype, copy=False)


class GaussianRBM(_RBMEstimator):
    """Gaussian-Bernoulli RBM (``ebm.GaussianRBM``) for real-valued features, with the
    interface of ``BernoulliRBM``.

    Each feature is standardised internally with the mean and sd of the data of the first
    ``fit``/``partial_fit`` (``mean_``, ``scale_``), since the model assumes unit-scale data;
    ``gibbs`` returns, and ``log_likelihood`` is a density (nats) in, the original units.

    Parameters ``n_components``, ``learning_rate``, ``batch_size``, ``n_iter``, ``verbose``,
    ``random_state``, ``method``, ``k``, ``n_chains`` and ``device`` are those of
    ``BernoulliRBM`` (``learning_rate`` defaults to 0.01: the Gaussian visible layer takes
    smaller steps); training is always by ``ebm.Trainer`` (``trainer_``).

    Args:
        sigma: initial per-unit sd of the visibles given the hiddens (standardised units).
        learn_sigma: learn ``log σ`` (True) or keep ``sigma`` fixed (the default: under plain
            SGD a rare large standardised value, such as a pixel that is almost always 0,
            throws ``log σ`` far; on the 8x8 digits one unit reached σ = e^55).

    Fitted attributes: as ``BernoulliRBM`` plus ``sigma_`` ``(n_features,)``, ``mean_`` and
    ``scale_``; the weights and biases act on standardised features.
    """

    _parameter_constraints: dict = {  # noqa: RUF012
        **_RBMEstimator._parameter_constraints,
        "sigma": [Interval(numbers.Real, 0, None, closed="neither")],
        "learn_sigma": ["boolean"],
    }

    def __init__(
        self,
        n_components: int = 256,
        *,
        learning_rate: float = 0.01,
        batch_size: int = 10,
        n_iter: int = 10,
        verbose: int = 0,
        random_state=None,
        method: str = "pcd",
        k: int = 1,
        n_chains: int | None = None,
        device: str | torch.device = "cpu",
        sigma: float = 0.5,
        learn_sigma: bool = False,
    ):
        self._store(locals())

    def _make_model(self, n_features: int, seed: int) -> EnergyModel:
        return _GaussianModel(n_features, self.n_components, sigma=self.sigma, learn_sigma=self.learn_sigma, seed=seed)

    def _set_statistics(self, X) -> None:
        if sp.issparse(X):
            X = X.toarray()
        self.mean_ = X.mean(0)
        scale = X.std(0)
        self.scale_ = np.where(scale > 0, scale, 1.0).astype(X.dtype)

    def _to_model_space(self, v: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.mean_, dtype=v.dtype, device=v.device)
        return (v - mean) / torch.as_tensor(self.scale_, dtype=v.dtype, device=v.device)

    def _from_model_space(self, v: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.mean_, dtype=v.dtype, device=v.device)
        return v * torch.as_tensor(self.scale_, dtype=v.dtype, device=v.device) + mean

    def _log_jacobian(self) -> float:
        # the density of x = mean + scale * z is that of z divided by prod(scale)
        return -float(np.log(self.scale_.astype(np.float64)).sum())

    def _publish(self) -> None:
        super()._publish()
        self.sigma_ = self.model_.sigma.detach().cpu().numpy().astype(self._dtype)


class _TrainerEngine:
    """Training by ``ebm.Trainer`` with scikit-learn's plain SGD at a constant rate."""

    def __init__(self, model: EnergyModel, estimator: _RBMEstimator, seed: int):
        n_chains = estimator.batch_size if estimator.n_chains is None else estimator.n_chains
        self.trainer = Trainer(
            model,
            method=estimator.method,
            k=estimator.k,
            n_chains=n_chains,
            batch_size=estimator.batch_size,
            optimizer=torch.optim.SGD(model.parameters(), lr=estimator.learning_rate),
            seed=seed,
            schedule="constant",
            metrics=None,
            progress=bool(estimator.verbose),
        )

    def train(self, v: torch.Tensor, epochs: int) -> None:
        # a later fit of the trainer continues the chains, the random stream and the biases
        # learned so far: n calls of one epoch train exactly as one call of n epochs
        self.trainer.fit({"v": v}, epochs=self.trainer.epoch + epochs)

    @property
    def history(self) -> list[dict]:
        return self.trainer.history

    @property
    def hidden_chains(self) -> torch.Tensor | None:
        chains = getattr(self.trainer.negatives, "chains", None)
        return None if chains is None else chains["h"]


class _FusedEngine:
    """The same training as ``_TrainerEngine`` for a ``MeanFieldRBM`` with block Gibbs, fused.

    Per update, with the batch ``x`` (``B`` rows) and the chains' ``v⁻`` (``C`` rows): the
    gradient of eq. 4 in closed form, ``ΔW = lr (xᵀ p(h|x) / B − v⁻ᵀ p(h|v⁻) / C)``,
    ``Δb = lr (mean p(h|x) − mean p(h|v⁻))``, ``Δa = lr (mean x − mean v⁻)``: what autograd
    gives ``ebm.Trainer`` through the free energies with ``free_energy_negatives`` and plain
    SGD, and scikit-learn's update. It is done in ~17 in-place tensor operations with the
    uniforms of many updates drawn at once, without the autograd graph, the optimizer and
    the sampler's per-step bookkeeping that dominate ``Trainer``'s cost on small models.
    """

    #: updates whose uniforms are drawn in one call
    CHUNK = 256

    def __init__(self, model: MeanFieldRBM, estimator: BernoulliRBM, seed: int):
        self.model = model
        self.lr, self.batch_size, self.k = estimator.learning_rate, estimator.batch_size, estimator.k
        self.persistent = estimator.method == "pcd"
        self.n_chains = estimator.batch_size if estimator.n_chains is None else estimator.n_chains
        self.verbose = bool(estimator.verbose)
        self.generator = torch.Generator(device=model.device).manual_seed(seed)
        self.chains: torch.Tensor | None = None  # persistent hidden states (n_chains, n_hidden)
        self.history: list[dict] = []
        self.init_bias = True

    @property
    def hidden_chains(self) -> torch.Tensor | None:
        return self.chains

    def _uniform(self, *shape: int) -> torch.Tensor:
        model = self.model
        return torch.rand(shape, generator=self.generator, dtype=model.dtype, device=model.device)

    def train(self, v: torch.Tensor, epochs: int) -> None:
        model = self.model
        if self.init_bias:
            model.init_visible_bias(v)  # as Trainer's init_bias
            self.init_bias = False
        if self.persistent and self.chains is None:
            self.chains = self._uniform(self.n_chains, model.n_hidden).lt_(0.5)
        elapsed = self.history[-1]["time"] if self.history else 0.0
        for _ in range(epochs):
            start = time.perf_counter()
            with torch.no_grad():
                self._epoch(v)
            epoch = len(self.history) + 1
            if not all(bool(torch.isfinite(p).all()) for p in (model.W, model.a, model.b)):
                raise TrainingDiverged(
                    f"training diverged in epoch {epoch}: the parameters became NaN or inf "
                    f"(learning_rate={self.lr:g}; try a smaller one)"
                )
            elapsed += time.perf_counter() - start
            self.history.append({"epoch": epoch, "time": elapsed})
            if self.verbose:
                print(f"[BernoulliRBM] Iteration {epoch}, time = {elapsed:.2f}s")

    def _epoch(self, v: torch.Tensor) -> None:
        model, k = self.model, self.k
        W, a, b = model.W, model.a, model.b
        n, n_visible, n_hidden = len(v), model.n_visible, model.n_hidden
        xs = v[torch.randperm(n, generator=self.generator, device=v.device)]
        starts = range(0, n, self.batch_size)
        for first in range(0, len(starts), self.CHUNK):
            chunk = starts[first : first + self.CHUNK]
            if self.persistent:
                u_v = self._uniform(len(chunk), k, self.n_chains, n_visible)
                u_h = self._uniform(len(chunk), k, self.n_chains, n_hidden)
            for i, s in enumerate(chunk):
                x = xs[s : s + self.batch_size]
                p_data = torch.addmm(b, x, W).sigmoid_()
                # CD: chains start at the batch, hidden units drawn given it
                h = self.chains if self.persistent else self._uniform(*p_data.shape).lt_(p_data)
                for j in range(k):
                    p_v = torch.addmm(a, h, W.T).sigmoid_()
                    v_neg = (u_v[i, j] if self.persistent else self._uniform(*p_v.shape)).lt_(p_v)
                    p_neg = torch.addmm(b, v_neg, W).sigmoid_()
                    h = (u_h[i, j] if self.persistent else self._uniform(*p_neg.shape)).lt_(p_neg)
                if self.persistent:
                    self.chains = h
                self.update(x, p_data, v_neg, p_neg)

    def update(self, x: torch.Tensor, p_data: torch.Tensor, v_neg: torch.Tensor, p_neg: torch.Tensor) -> None:
        """One SGD step in place from the batch ``x`` ``(B, n_visible)`` with ``p_data = p(h | x)``
        and the negatives ``v_neg`` ``(C, n_visible)`` with ``p_neg = p(h | v_neg)``."""
        model, lr = self.model, self.lr
        step_data, step_neg = lr / len(x), lr / len(v_neg)
        model.W.addmm_(x.T, p_data, alpha=step_data).addmm_(v_neg.T, p_neg, alpha=-step_neg)
        model.b.add_(p_data.sum(0), alpha=step_data).sub_(p_neg.sum(0), alpha=step_neg)
        model.a.add_(x.sum(0), alpha=step_data).sub_(v_neg.sum(0), alpha=step_neg)
