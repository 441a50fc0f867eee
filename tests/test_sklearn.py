"""ebm.sklearn: scikit-learn's estimator checks, pipelines, clone, pickling and the numbers."""

import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.neural_network import BernoulliRBM as SkBernoulliRBM
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from ebm.model import DataWarning
from ebm.sklearn import BernoulliRBM, GaussianRBM, MeanFieldRBM, _FusedEngine
from ebm.training.objective import surrogate

SMALL = {"n_components": 3, "n_iter": 2, "batch_size": 20, "random_state": 0}


@parametrize_with_checks([BernoulliRBM(**SMALL), BernoulliRBM(**SMALL, solver="trainer"), GaussianRBM(**SMALL)])
def test_sklearn_estimator_checks(estimator, check):
    # the checks feed unscaled data: BernoulliRBM's [0, 1] warning is expected there
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        check(estimator)


def binary_data(n=120, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, d)) < np.linspace(0.1, 0.9, d)).astype(np.float64)


def all_binary_rows(d):
    return ((np.arange(2**d)[:, None] >> np.arange(d)) & 1).astype(np.float64)


def test_same_parameters_and_fitted_attributes_as_scikit_learn():
    ours, theirs = BernoulliRBM(n_components=4, n_iter=1, random_state=0), SkBernoulliRBM(n_components=4, n_iter=1)
    assert set(theirs.get_params()) <= set(ours.get_params())
    assert {k: v for k, v in ours.get_params().items() if k in theirs.get_params()} == theirs.get_params() | {
        "n_components": 4,
        "random_state": 0,
    }
    X = binary_data()
    ours.fit(X)
    theirs.fit(X)
    for name in ("components_", "intercept_hidden_", "intercept_visible_", "h_samples_", "n_features_in_"):
        assert np.shape(getattr(ours, name)) == np.shape(getattr(theirs, name)), name


def load_into_sklearn(ours):
    """A scikit-learn BernoulliRBM carrying our fitted weights."""
    theirs = SkBernoulliRBM(n_components=ours.n_components)
    theirs.components_ = ours.components_.copy()
    theirs.intercept_hidden_ = ours.intercept_hidden_.copy()
    theirs.intercept_visible_ = ours.intercept_visible_.copy()
    theirs.n_features_in_ = ours.n_features_in_
    return theirs


def test_transform_and_exact_pseudo_likelihood_agree_with_scikit_learn_formulas():
    X = binary_data() * 0.9 + 0.05  # probabilities, as scikit-learn takes them
    ours = BernoulliRBM(n_components=5, n_iter=3, random_state=1).fit(X)
    theirs = load_into_sklearn(ours)
    np.testing.assert_allclose(ours.transform(X), theirs.transform(X), rtol=1e-12)
    # scikit-learn's score_samples is D * log sigmoid(F(x_flipped) - F(x)) for one random unit;
    # ours sums that over every unit, with the same free energy
    free = theirs._free_energy(X)
    expected = np.zeros(len(X))
    for i in range(X.shape[1]):
        flipped = X.copy()
        flipped[:, i] = 1 - flipped[:, i]
        expected += -np.logaddexp(0, free - theirs._free_energy(flipped))
    np.testing.assert_allclose(ours.score_samples(X), expected, rtol=1e-10)


def test_exact_log_likelihood_is_normalised():
    d = 6
    model = BernoulliRBM(n_components=3, n_iter=5, random_state=0).fit(binary_data(d=d))
    total = np.exp(model.log_likelihood(all_binary_rows(d))).sum()
    assert total == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("learn_sigma", [False, True])
def test_gaussian_log_likelihood_is_a_density_in_the_original_units(learn_sigma):
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 4.0, size=(300, 1))
    model = GaussianRBM(n_components=3, n_iter=5, random_state=0, learn_sigma=learn_sigma).fit(X)
    grid = np.linspace(3 - 60, 3 + 60, 40001)[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # the grid reaches 15 sd out, on purpose
        density = np.exp(model.log_likelihood(grid))
    assert np.trapezoid(density, grid[:, 0]) == pytest.approx(1.0, abs=1e-6)


def test_ais_log_likelihood_matches_exact():
    X = binary_data(d=10)
    model = BernoulliRBM(n_components=4, n_iter=5, random_state=0).fit(X)
    exact = model.log_likelihood(X).mean()
    # over 30 seeds AIS's error had sd 0.013 nats: 0.05 is 3.9 sd
    ais = model.log_likelihood(X, method="ais", n_betas=1000, n_runs=200, seed=0).mean()
    assert ais == pytest.approx(exact, abs=0.05)


def test_sparse_and_float32_inputs():
    X = binary_data()
    dense = BernoulliRBM(n_components=4, n_iter=2, random_state=0).fit(X)
    sparse = BernoulliRBM(n_components=4, n_iter=2, random_state=0).fit(sp.csr_matrix(X))
    np.testing.assert_array_equal(dense.components_, sparse.components_)
    np.testing.assert_array_equal(dense.transform(X), sparse.transform(sp.csc_matrix(X)))
    single = BernoulliRBM(n_components=4, n_iter=2, random_state=0).fit(X.astype(np.float32))
    assert single.components_.dtype == np.float32 and single.transform(X.astype(np.float32)).dtype == np.float32
    assert single.model_.dtype.is_floating_point and str(single.model_.dtype) == "torch.float32"


def test_refit_with_other_solver_and_method_drops_their_attributes():
    X = binary_data()
    model = BernoulliRBM(n_components=3, n_iter=1, random_state=0, solver="trainer").fit(X)
    assert hasattr(model, "trainer_") and hasattr(model, "h_samples_")
    model.set_params(solver="fused", method="cd").fit(X)
    assert not hasattr(model, "trainer_") and not hasattr(model, "h_samples_")


def test_values_outside_unit_interval_warn():
    X = binary_data()
    with pytest.warns(DataWarning, match=r"values in \[0, 1\].*minmax_scale"):
        BernoulliRBM(n_components=2, n_iter=1, random_state=0).fit(X * 3)


@pytest.mark.parametrize("solver", ["fused", "trainer"])
def test_partial_fit_continues_the_chains_and_the_model(solver):
    X = binary_data()
    model = BernoulliRBM(n_components=4, random_state=0, solver=solver)
    model.partial_fit(X)
    chains = model.h_samples_.copy()
    weights = model.components_.copy()
    model.partial_fit(X)
    assert len(model.history_) == 2
    assert not np.array_equal(model.components_, weights)
    # n_iter epochs of fit equal n_iter partial_fit calls: the chains carry over
    once = BernoulliRBM(n_components=4, n_iter=2, random_state=0, solver=solver).fit(X)
    np.testing.assert_allclose(once.components_, model.components_, rtol=1e-12)
    # the persistent chains moved on (40 near-fair bits: equal with probability ~2^-40)
    assert chains.shape == model.h_samples_.shape and not np.array_equal(chains, model.h_samples_)


def test_pipeline_grid_search_clone_and_pickle():
    from sklearn.datasets import load_digits

    digits = load_digits()
    X, y = digits.data[:400] / 16, digits.target[:400]
    pipe = Pipeline([("rbm", BernoulliRBM(n_iter=2, random_state=0)), ("logistic", LogisticRegression(max_iter=200))])
    search = GridSearchCV(pipe, {"rbm__n_components": [8, 16], "rbm__learning_rate": [0.05]}, cv=2).fit(X, y)
    assert search.best_params_["rbm__n_components"] in (8, 16)
    fitted = search.best_estimator_
    copy = clone(fitted)
    assert copy.get_params()["rbm__n_components"] == fitted.get_params()["rbm__n_components"]
    assert not hasattr(copy.named_steps["rbm"], "components_")
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.predict(X), fitted.predict(X))
    np.testing.assert_array_equal(restored.named_steps["rbm"].gibbs(X[:5]), fitted.named_steps["rbm"].gibbs(X[:5]))


def test_fused_update_is_the_trainer_sgd_step():
    """The fused solver's update is one SGD step on ebm.Trainer's surrogate (free energies of
    the data and of the negatives, eq. 4)."""
    g = torch.Generator().manual_seed(0)
    model = MeanFieldRBM(6, 4, init_std=0.5, seed=0).double()
    x = torch.rand(5, 6, generator=g, dtype=torch.float64)  # probabilities
    v_neg = (torch.rand(3, 6, generator=g, dtype=torch.float64) < 0.5).double()
    lr = 0.3
    loss = surrogate(model, {"v": x}, {"v": v_neg}, free_energy_negatives=True)
    grads = torch.autograd.grad(loss, [model.W, model.a, model.b])
    expected = [(p - lr * grad).detach() for p, grad in zip([model.W, model.a, model.b], grads, strict=True)]
    engine = _FusedEngine(model, BernoulliRBM(learning_rate=lr), seed=0)
    with torch.no_grad():
        engine.update(x, model.conditional("h", {"v": x}).probs, v_neg, model.conditional("h", {"v": v_neg}).probs)
    for parameter, want in zip([model.W, model.a, model.b], expected, strict=True):
        torch.testing.assert_close(parameter.detach(), want, rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_gallery_pipeline_example_fast():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "sklearn_pipeline.py"
    spec = importlib.util.spec_from_file_location("sklearn_pipeline", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    results = example.main(["--fast", "--repeats", "1"])
    assert set(results) == {"scikit-learn", "ebm", "ebm, Trainer"}
    for numbers in results.values():
        assert numbers["accuracy"] > 0.5  # ten classes: chance is 0.1
        assert -40 < numbers["log_likelihood"] < numbers["pseudo_ll"] + 20 and numbers["pseudo_ll"] < 0
