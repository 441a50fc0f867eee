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
What differs: the training loop is ``ebm.Trainer`` (``trainer_``; its ``history_`` has the
loss and time per epoch), the visible biases start at the data's log-odds, ``score_samples``
is the exact pseudo-log-likelihood (every unit flipped in turn, not one random unit), and
``log_likelihood`` gives the log-likelihood itself (exact, or by AIS).
"""

from __future__ import annotations

import numbers
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
from ebm.training.trainer import Trainer
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


class _KeepChains:
    """Trainer callback: continue the negative phase's chains, and the random stream, from
    the previous ``Trainer.fit`` call (which sets the chains up afresh; ``partial_fit`` must
    not), so that ``n`` calls of one epoch train exactly as one call of ``n`` epochs."""

    def __init__(self):
        self.state: dict | None = None
        self.generator: torch.Tensor | None = None

    def save(self, trainer: Trainer) -> None:
        self.state = trainer.negatives.state_dict()
        self.generator = trainer.generator.get_state()

    def on_train_begin(self, trainer: Trainer) -> None:
        if self.state is not None:
            trainer.negatives.load_state_dict(self.state)
            trainer.generator.set_state(self.generator)


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
        model, dtype = self.trainer_.model, self._dtype
        self.components_ = model.W.detach().T.cpu().numpy().astype(dtype)
        self.intercept_hidden_ = model.b.detach().cpu().numpy().astype(dtype)
        self.intercept_visible_ = model.a.detach().cpu().numpy().astype(dtype)
        chains = getattr(self.trainer_.negatives, "chains", None)
        if chains is not None:
            self.h_samples_ = chains["h"].cpu().numpy().astype(dtype)
        self.history_ = self.trainer_.history

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

    @property
    def _n_chains(self) -> int:
        return self.batch_size if self.n_chains is None else self.n_chains

    def _start(self, X) -> None:
        self._dtype = X.dtype
        self._set_statistics(X)
        self.random_state_ = check_random_state(self.random_state)
        seed = int(self.random_state_.randint(np.iinfo(np.int32).max))
        model = self._make_model(X.shape[1], seed).to(device=self.device, dtype=_DTYPES[np.dtype(X.dtype)])
        optimizer = torch.optim.SGD(model.parameters(), lr=self.learning_rate)  # scikit-learn's plain SGD
        self.trainer_ = Trainer(
            model,
            method=self.method,
            k=self.k,
            n_chains=self._n_chains,
            batch_size=self.batch_size,
            optimizer=optimizer,
            seed=seed,
            schedule="constant",
            metrics=None,
            progress=bool(self.verbose),
            callbacks=[_KeepChains()],
        )

    def _train(self, X, epochs: int) -> None:
        trainer = self.trainer_
        keep = next(cb for cb in trainer.callbacks if isinstance(cb, _KeepChains))
        trainer.fit({"v": self._tensor(X)}, epochs=trainer.epoch + epochs)
        trainer.init_bias = False  # later partial_fit calls keep the biases learned so far
        keep.save(trainer)
        self._publish()

    @property
    def model_(self) -> EnergyModel:
        """The trained ``ebm`` model (use it with ``ebm.sample``, ``ebm.log_likelihood``, ...)."""
        check_is_fitted(self)
        return self.trainer_.model

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
        first = not hasattr(self, "trainer_")
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
        model = self.trainer_.model
        with torch.no_grad():
            probs = model.conditional("h", {"v": self._tensor(X)}).probs
        return probs.cpu().numpy().astype(X.dtype, copy=False)

    def gibbs(self, v) -> np.ndarray:
        """One Gibbs step from visible rows ``v`` ``(n_samples, n_features)``: ``h ~ p(h | v)``,
        then ``v' ~ p(v | h)``; returns ``v'`` in the dtype of ``v``. Draws from
        ``random_state_``, as scikit-learn's does."""
        check_is_fitted(self)
        X = self._validate(v, reset=False)
        model = self.trainer_.model
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
        model = self.trainer_.model
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

    Data: values are probabilities of 1 in [0, 1] (binary data, or e.g. pixels scaled by
    ``minmax_scale``), as scikit-learn takes them; values outside [0, 1] warn
    ``ebm.model.DataWarning`` and are used as they are.

    Fitted attributes:
        components_: ``(n_components, n_features)`` weights (``W.T``).
        intercept_hidden_: ``(n_components,)``; intercept_visible_: ``(n_features,)``.
        h_samples_: ``(n_chains, n_components)`` hidden states of the persistent chains (PCD).
        trainer_: the ``ebm.Trainer``; ``model_`` its ``MeanFieldRBM``; history_: per-epoch
            loss and time.
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
    ):
        self.n_components = n_components
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.verbose = verbose
        self.random_state = random_state
        self.method = method
        self.k = k
        self.n_chains = n_chains
        self.device = device

    def _make_model(self, n_features: int, seed: int) -> EnergyModel:
        return MeanFieldRBM(n_features, self.n_components, seed=seed)

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
        pll = pseudo_log_likelihood(self.trainer_.model, {"v": self._tensor(X)})
        return pll.cpu().numpy().astype(X.dtype, copy=False)


class GaussianRBM(_RBMEstimator):
    """Gaussian-Bernoulli RBM (``ebm.GaussianRBM``) for real-valued features, with the
    interface of ``BernoulliRBM``.

    Each feature is standardised internally with the mean and sd of the data of the first
    ``fit``/``partial_fit`` (``mean_``, ``scale_``), since the model assumes unit-scale data;
    ``gibbs`` returns, and ``log_likelihood`` is a density (nats) in, the original units.

    Args:
        n_components, learning_rate, batch_size, n_iter, verbose, random_state, method, k,
        n_chains, device: as ``BernoulliRBM`` (``learning_rate`` defaults to 0.01: the
            Gaussian visible layer takes smaller steps).
        sigma: initial per-unit sd of the visibles given the hiddens (standardised units).
        learn_sigma: learn ``log σ`` (True) or keep ``sigma`` fixed.

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
        learn_sigma: bool = True,
    ):
        self.n_components = n_components
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.verbose = verbose
        self.random_state = random_state
        self.method = method
        self.k = k
        self.n_chains = n_chains
        self.device = device
        self.sigma = sigma
        self.learn_sigma = learn_sigma

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
        self.sigma_ = self.trainer_.model.sigma.detach().cpu().numpy().astype(self._dtype)
