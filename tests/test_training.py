"""Training: ebm.fit / Trainer, negative phases, checkpoints, divergence, training monitors."""

import math

import pytest
import torch
from models import random_rbm
from stattools import chi_square_two_sided_pvalue, z_threshold
from torch import nn

import ebm
from ebm.datasets import bars_and_stripes, digits
from ebm.evaluation.enumeration import enumerate_states
from ebm.evaluation.pseudo import pseudo_log_likelihood, reconstruction_error
from ebm.training import ReplayBuffer, TrainingDiverged
from ebm.training.negatives import ContrastiveDivergence, PersistentChains, clamped_latents

# many tiny ops: thread contention on the shared 2-core machine only slows them
pytestmark = pytest.mark.usefixtures("one_thread")


class EnergyOnlyRBM(ebm.EnergyModel):
    """The RBM energy of eq. 6 written by a user: no conditional(), no free_energy().

    Gibbs then updates it site by site and training samples the data-phase latents.
    """

    def __init__(self, n_visible, n_hidden, seed=0):
        super().__init__(v=ebm.Binary(n_visible), h=ebm.Binary(n_hidden))
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(0.1 * torch.randn(n_visible, n_hidden, generator=g))
        self.a = nn.Parameter(torch.zeros(n_visible))
        self.b = nn.Parameter(torch.zeros(n_hidden))

    def energy(self, state):
        v, h = state["v"], state["h"]
        return -(v @ self.a) - (h @ self.b) - ((v @ self.W) * h).sum(-1)


class Recorder:
    """A callback recording every call it gets."""

    def __init__(self):
        self.calls = []

    def on_train_begin(self, trainer):
        self.calls.append(("begin", trainer.epoch))

    def on_batch_end(self, trainer, batch, negatives):
        shapes = ({k: tuple(v.shape) for k, v in batch.items()}, {k: tuple(v.shape) for k, v in negatives.items()})
        self.calls.append(("batch", *shapes))

    def on_epoch_end(self, trainer, epoch, metrics):
        self.calls.append(("epoch", epoch, dict(metrics)))


def mean_ll(model, data):
    return ebm.log_likelihood(model, data).mean().item()


# ---------------------------------------------------------------------- monitors
def test_pseudo_likelihood_all_sites_matches_exact_conditionals():
    torch.manual_seed(0)
    rbm = ebm.RBM(5, 3, init_std=0.8, seed=3).double()
    v = torch.randint(0, 2, (7, 5)).double()
    states = next(enumerate_states(rbm, ["v"]))["v"]
    log_p = ebm.log_likelihood(rbm, {"v": states})
    index = {tuple(s.tolist()): i for i, s in enumerate(states)}
    expected = torch.zeros(len(v), dtype=torch.float64)
    for r, row in enumerate(v):
        for i in range(5):
            other = row.clone()
            other[i] = 1 - other[i]
            lp, lq = log_p[index[tuple(row.tolist())]], log_p[index[tuple(other.tolist())]]
            expected[r] += lp - torch.logaddexp(lp, lq)
    torch.testing.assert_close(pseudo_log_likelihood(rbm, {"v": v}), expected, rtol=0, atol=1e-12)


def test_pseudo_likelihood_site_subsets_are_unbiased():
    """The mean of many m-site estimates is the all-site value within 4.5 standard errors."""
    torch.manual_seed(0)
    rbm = ebm.RBM(12, 4, init_std=0.8, seed=5).double()
    v = torch.randint(0, 2, (1, 12)).double().expand(4000, 12)
    full = pseudo_log_likelihood(rbm, {"v": v[:1]})[0]
    estimates = pseudo_log_likelihood(rbm, {"v": v}, sites=3, generator=torch.Generator().manual_seed(1))
    se = estimates.std() / math.sqrt(len(estimates))
    assert abs(estimates.mean() - full) < 4.5 * se
    assert estimates.std() > 0


def test_reconstruction_error_is_one_mean_field_pass():
    rbm = ebm.RBM(6, 3, init_std=0.5, seed=0)
    v = torch.randint(0, 2, (4, 6)).float()
    with torch.no_grad():
        recon = torch.sigmoid(rbm.visible_logits(torch.sigmoid(rbm.hidden_logits(v))))
    torch.testing.assert_close(reconstruction_error(rbm, {"v": v}), (v - recon).square().sum(1))


def test_reconstruction_error_needs_conditionals():
    with pytest.raises(ValueError, match="conditional"):
        reconstruction_error(EnergyOnlyRBM(3, 2), {"v": torch.zeros(2, 3)})


# ---------------------------------------------------------------------- negative phases
def test_sitewise_clamped_latents_follow_the_exact_conditional():
    """For a user energy the data phase samples h with v clamped; one site-wise sweep of
    conditionally independent h is an exact draw: mean h within 4.5 standard errors of σ(vW + b)."""
    model = EnergyOnlyRBM(4, 3, seed=1)
    n = 20_000
    v = torch.tensor([[1.0, 0.0, 1.0, 1.0]]).expand(n, 4)
    h = clamped_latents(model, ebm.Gibbs(), {"v": v}, 1, torch.Generator().manual_seed(0))["h"]
    with torch.no_grad():
        p = torch.sigmoid(v[0] @ model.W + model.b)
    se = (p * (1 - p) / n).sqrt()
    assert ((h.mean(0) - p).abs() < 4.5 * se).all()


def test_pcd_chains_do_not_depend_on_the_batch_size():
    # shapes only: that the chains continue is test_pcd_chains_persist_across_batches
    recorder = Recorder()
    data = {"v": bars_and_stripes(3)}
    ebm.fit(ebm.RBM(9, 4), data, epochs=1, batch_size=5, n_chains=37, metrics=None, callbacks=[recorder])
    batches = [c for c in recorder.calls if c[0] == "batch"]
    assert [b[1]["v"] for b in batches] == [(5, 9), (5, 9), (4, 9)]
    assert all(b[2] == {"v": (37, 9), "h": (37, 4)} for b in batches)


def test_cd_has_one_chain_per_batch_row():
    # shapes only: that the chains start at the batch is test_cd_1_negatives_are_one_gibbs_sweep_from_the_batch
    recorder = Recorder()
    ebm.fit(
        ebm.RBM(9, 4),
        {"v": bars_and_stripes(3)},
        method="cd",
        k=2,
        epochs=1,
        batch_size=6,
        metrics=None,
        callbacks=[recorder],
    )
    batches = [c for c in recorder.calls if c[0] == "batch"]
    assert [b[2]["v"] for b in batches] == [(6, 9), (6, 9), (2, 9)]


def visible_means_after_sweeps(rbm, v0, sweeps):
    """Exact E[v] after ``sweeps`` Gibbs sweeps of an RBM from v₀ with h ~ p(h | v₀), by
    enumerating h: p(h) evolves by T(h, h') = Σ_v p(v | h) p(h' | v), then v ~ p(v | h)."""

    def bernoulli(p, x):  # (rows, states): probability of each state x under each row of p
        return (x * p.unsqueeze(1) + (1 - x) * (1 - p.unsqueeze(1))).prod(-1)

    h = next(enumerate_states(rbm, ["h"]))["h"]
    v = next(enumerate_states(rbm, ["v"]))["v"]
    with torch.no_grad():
        p_v_given_h = rbm.conditional("v", {"h": h}).probs
        p_h = bernoulli(torch.sigmoid(rbm.hidden_logits(v0.unsqueeze(0))), h)[0]
        transition = bernoulli(p_v_given_h, v) @ bernoulli(torch.sigmoid(rbm.hidden_logits(v)), h)
        for _ in range(sweeps - 1):
            p_h = p_h @ transition
        return p_h @ p_v_given_h


def visible_z(negatives, expected):
    """z of each visible mean of ``(n, d)`` independent negatives against its exact value."""
    return (negatives.mean(0) - expected) / (expected * (1 - expected) / negatives.shape[0]).sqrt()


V0 = torch.tensor([1.0, 1, 1, 0, 0, 0], dtype=torch.float64)


def test_cd_1_negatives_are_one_gibbs_sweep_from_the_batch():
    """Every row of the batch is the same v₀: CD-1's negative v₁ follows the one-sweep law
    from v₀ (chains started at random instead miss it by up to 54 standard errors)."""
    rbm = random_rbm(6, 3, scale=1.5, seed=4)
    n = 4000
    negatives = ContrastiveDivergence(k=1)(rbm, ebm.Gibbs(), {"v": V0.expand(n, 6)}, torch.Generator().manual_seed(0))
    z = visible_z(negatives["v"], visible_means_after_sweeps(rbm, V0, 1))
    assert z.abs().max() < z_threshold(z.numel()), z


def test_pcd_chains_persist_across_batches():
    """Chains started at v₀ follow the one- then two-sweep laws after the first and second
    batches: they continue from where they were, whatever the batch."""
    rbm = random_rbm(6, 3, scale=1.5, seed=4)
    n = 4000
    generator = torch.Generator().manual_seed(0)
    pcd = PersistentChains(k=1, n_chains=n, init="data")
    pcd.setup(rbm, ebm.Gibbs(), {"v": V0.unsqueeze(0)}, generator)
    for sweeps in (1, 2):
        negatives = pcd(rbm, ebm.Gibbs(), {"v": torch.zeros(3, 6, dtype=torch.float64)}, generator)
        z = visible_z(negatives["v"], visible_means_after_sweeps(rbm, V0, sweeps))
        assert z.abs().max() < z_threshold(2 * z.numel()), (sweeps, z)  # two batches tested


def test_pcd_refreshes_the_sampler_after_every_parameter_update():
    """The parameters change before every batch (here only an additive constant, so
    p(x) = N(0, 1) throughout): a MALA/HMC state caching the old energy would accept with
    the wrong ratio (measured without the refresh: E[x²] = 2.06 for MALA, 1.34 for HMC)."""

    class Shifted(ebm.EnergyModel):
        def __init__(self):
            super().__init__(x=ebm.Real(1))
            self.offset = nn.Parameter(torch.zeros((), dtype=torch.float64))

        def energy(self, state):
            return 0.5 * state["x"][:, 0] ** 2 + self.offset

    model = Shifted().double()
    n = 1000
    for sampler in (ebm.Langevin(1.0, adapt_step_size=False, adapt_mass=False),
                    ebm.HMC(1.0, 2, adapt_step_size=False, adapt_mass=False)):  # fmt: skip
        generator = torch.Generator().manual_seed(0)
        pcd = PersistentChains(k=1, n_chains=n)
        pcd.setup(model, sampler, {}, generator)  # N(0, 1) random start: already at equilibrium
        for _ in range(30):
            with torch.no_grad():
                model.offset -= 5.0
            x = pcd(model, sampler, {}, generator)["x"]
        # independent chains, exact MCMC from an exact start: Σx² ~ chi-square(n); two
        # samplers, so each two-sided test at 5e-4
        assert chi_square_two_sided_pvalue(x.square().sum().item(), n) > 5e-4, x.square().mean()


def test_replay_buffer_writes_back_its_negatives():
    model = ebm.RBM(9, 4, seed=0)
    replay = ReplayBuffer(k=1, n_chains=8, buffer_size=20, reinit=0.5)
    g = torch.Generator().manual_seed(0)
    replay.setup(model, ebm.Gibbs(), {"v": bars_and_stripes(3)}, g)
    before = {k: v.clone() for k, v in replay.state_dict()["buffer"].items()}
    negatives = replay(model, ebm.Gibbs(), {}, g)
    after = replay.state_dict()["buffer"]
    assert negatives["v"].shape == (8, 9)
    changed = (after["v"] != before["v"]).any(1) | (after["h"] != before["h"]).any(1)
    assert 0 < changed.sum() <= 8
    rows = {tuple(r.tolist()) for r in torch.cat([after["v"], after["h"]], 1)}
    assert all(tuple(r.tolist()) in rows for r in torch.cat([negatives["v"], negatives["h"]], 1))


@pytest.mark.parametrize(
    "bad",
    [
        dict(method="nope"),
        dict(k=0),
        dict(n_chains=0),
        dict(batch_size=0),
        dict(lr=-1.0),
        dict(optimizer="lbfgs"),
        dict(schedule="step"),
        dict(metrics=["bogus"]),
    ],
)
def test_bad_options_raise_clear_errors(bad):
    with pytest.raises(ValueError):
        ebm.fit(ebm.RBM(9, 2), {"v": bars_and_stripes(3)}, epochs=1, **bad)


def test_bad_data_raises_clear_errors():
    rbm = ebm.RBM(9, 2)
    with pytest.raises(ValueError, match="unknown block"):
        ebm.fit(rbm, {"x": bars_and_stripes(3)}, epochs=1)
    with pytest.raises(TypeError, match=r"float64 values that .* cannot hold exactly"):
        ebm.fit(rbm, {"v": torch.full((4, 9), 0.1, dtype=torch.float64)}, epochs=1)
    with pytest.raises(ValueError, match="shape"):
        ebm.fit(rbm, {"v": torch.zeros(4, 8)}, epochs=1)
    with pytest.raises(ValueError, match="takes only the values"):
        ebm.fit(rbm, {"v": torch.full((4, 9), 0.5)}, epochs=1)
    with pytest.raises(ValueError, match="metric 'recon' is not available"):
        ebm.fit(EnergyOnlyRBM(3, 2), {"v": torch.zeros(2, 3)}, epochs=1, metrics=["recon"])


# ---------------------------------------------------------------------- callbacks and history
def test_callbacks_and_history():
    recorder = Recorder()
    data = {"v": bars_and_stripes(3)}

    class StopAfterTwo:
        def on_epoch_end(self, trainer, epoch, metrics):
            metrics["extra"] = float(epoch)
            if epoch == 2:
                trainer.stop_training = True

    history = ebm.fit(ebm.RBM(9, 4), data, epochs=5, batch_size=7, validation=data, callbacks=[recorder, StopAfterTwo()])
    assert len(history) == 2
    assert history["extra"] == [1.0, 2.0]
    assert recorder.calls[0] == ("begin", 0)
    assert [c[1] for c in recorder.calls if c[0] == "epoch"] == [1, 2]
    assert sum(c[0] == "batch" for c in recorder.calls) == 4
    for key in ("loss", "time", "recon", "pseudo_ll", "log_likelihood", "val_log_likelihood"):
        assert all(math.isfinite(x) for x in history[key]), key
    assert history["log_likelihood"] == history["val_log_likelihood"]
    with pytest.raises(KeyError, match="no metric"):
        history["nope"]


# ---------------------------------------------------------------------- checkpoints and divergence
class Interrupt(Exception):
    pass


class InterruptAt:
    """Raises in the middle of an epoch, as a crash or a kill would."""

    def __init__(self, epoch, batch):
        self.epoch, self.batch = epoch, batch

    def on_batch_end(self, trainer, batch, negatives):
        if trainer.epoch + 1 == self.epoch and trainer.batch == self.batch:
            raise Interrupt


@pytest.mark.parametrize("method", ["pcd", "cd", "replay"])
def test_resume_equals_uninterrupted(tmp_path, method):
    data = {"v": bars_and_stripes(3)}
    options = dict(method=method, k=2, epochs=4, batch_size=4, n_chains=10, lr=0.05, seed=3, validation=data)
    whole = ebm.RBM(9, 4, seed=0)
    expected = ebm.fit(whole, data, **options)

    path = tmp_path / "ckpt.pt"
    interrupted = ebm.RBM(9, 4, seed=0)
    with pytest.raises(Interrupt):
        ebm.fit(interrupted, data, checkpoint=path, callbacks=[InterruptAt(3, 2)], **options)
    resumed = ebm.RBM(9, 4, seed=1)  # a different start: everything must come from the checkpoint
    history = ebm.fit(resumed, data, checkpoint=path, resume=path, **options)

    for name, p in whole.named_parameters():
        assert torch.equal(p, dict(resumed.named_parameters())[name]), name
    assert len(history) == 4
    for got, want in zip(history, expected, strict=True):
        assert {k: v for k, v in got.items() if k != "time"} == {k: v for k, v in want.items() if k != "time"}


def test_resume_needs_an_existing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ebm.fit(ebm.RBM(9, 2), {"v": bars_and_stripes(3)}, epochs=1, resume=tmp_path / "missing.pt")


def test_divergence_stops_with_the_epoch_and_batch_and_keeps_the_last_good_checkpoint(tmp_path):
    data = {"v": bars_and_stripes(3)}

    class AbsurdLearningRateAfter:
        def on_epoch_end(self, trainer, epoch, metrics):
            if epoch == 2:
                for group in trainer.optimizer.param_groups:
                    group["lr"] = 1e38

    path = tmp_path / "ckpt.pt"
    with pytest.raises(TrainingDiverged, match=r"epoch 3, batch \d+.*last good checkpoint .*epoch 2"):
        ebm.fit(ebm.RBM(9, 4), data, epochs=5, batch_size=5, checkpoint=path, callbacks=[AbsurdLearningRateAfter()])
    state = torch.load(path, weights_only=False)
    assert state["epoch"] == 2
    assert all(torch.isfinite(p).all() for p in state["model"]["state_dict"].values())


def test_absurd_learning_rate_stops_in_the_first_epoch():
    # Adam moves every parameter by about lr per step: energies pass float32's 3.4e38 within a few
    # batches, or (RBM gradient by products: its loss stays finite longer) the runaway check stops it
    stop = r"epoch 1, batch \d+: the (energies became NaN or inf|parameters ran away)"
    with pytest.raises(TrainingDiverged, match=stop):
        ebm.fit(ebm.RBM(9, 4), {"v": bars_and_stripes(3)}, epochs=3, batch_size=1, lr=1e36, metrics=None)


# ---------------------------------------------------------------------- learning
# PCD at lr 0.1 oscillates here (its 20 chains stop mixing between the two sharp modes):
# over 30 seeds it closed between -58% and 90% of the gap after 200 epochs; at 0.05 it
# closes 71% to 95% (mean 83%, sd 7%). CD at 0.1 closes 81% to 97% (mean 91%, sd 4%).
@pytest.mark.parametrize(("method", "lr"), [("cd", 0.1), ("pcd", 0.05)])
def test_user_energy_trains_through_sampled_latents(method, lr):
    """No free_energy, no conditional: the data phase samples h with v clamped, Gibbs goes
    site by site, and the exact log-likelihood still closes much of the gap to the optimum."""
    data = {"v": torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1]]).repeat(3, 1)}
    model = EnergyOnlyRBM(4, 2, seed=0)
    recorder = Recorder()
    start = mean_ll(model, data)
    ebm.fit(
        model, data, method=method, k=1, epochs=200, batch_size=2, n_chains=20, lr=lr, metrics=None, callbacks=[recorder]
    )
    assert all(c[1] == {"v": (2, 4), "h": (2, 2)} for c in recorder.calls if c[0] == "batch")
    # the start is near uniform (-log 16 = -2.77), the best possible -log 2 = -0.69: close
    # half of that gap (4.7 sd below PCD's mean over the seeds above, 11 below CD's)
    gap = -math.log(2) - start
    assert mean_ll(model, data) > start + 0.5 * gap


def test_digits_rbm_rises_above_independent_pixels_within_a_few_epochs():
    """With the defaults, 16 hidden units beat the independent-pixel model (W = 0, visible
    biases at the data log-odds: where training starts) after 5 epochs, exactly evaluated."""
    x, _ = digits()
    independent = ebm.RBM(64, 16, init_std=0.0)
    independent.init_visible_bias(x)
    baseline = mean_ll(independent, {"v": x})
    rbm = ebm.RBM(64, 16, seed=0)
    ebm.fit(rbm, {"v": x}, epochs=5, metrics=None)
    assert mean_ll(rbm, {"v": x}) > baseline


@pytest.mark.slow
def test_pcd_bars_and_stripes_gets_close_to_the_best_possible():
    """3x3 bars-and-stripes (14 patterns): the best mean log-likelihood is -ln 14 = -2.639.
    Within 0.15 nats means at least exp(-0.15) = 86% of the probability on the 14 patterns
    (if spread evenly). At the default lr (0.03 for the centred update of this 9x16 RBM)
    seeds 0-59 end at -2.732 to -2.676 after 1500 epochs (-2.694 at seed 0); an explicit
    lr=0.05, fine without centring (worst -2.775), ended below -2.79 at 3 of those 60 seeds."""
    data = {"v": bars_and_stripes(3)}
    rbm = ebm.RBM(9, 16, init_std=0.1, seed=0)
    ebm.fit(rbm, data, method="pcd", k=10, n_chains=500, epochs=1500, batch_size=14, metrics=None)
    assert mean_ll(rbm, data) > -math.log(14) - 0.15


@pytest.mark.parametrize(("min_steps", "epochs"), [(50, 20), (100, 34), (99, 33)])
def test_default_epochs_are_twenty_or_enough_for_the_minimum_number_of_steps(monkeypatch, min_steps, epochs):
    # 25 rows in batches of 10: 3 steps per epoch (the last batch holds 5 rows)
    monkeypatch.setattr(ebm.training.trainer, "DEFAULT_MIN_STEPS", min_steps)
    monkeypatch.setattr(ebm.training.trainer, "DEFAULT_EPOCHS", 20)
    data = {"v": digits()[0][:25]}
    trainer = ebm.Trainer(ebm.RBM(64, 2), metrics=None)
    assert trainer.epochs is None
    history = trainer.fit(data)
    assert len(history) == epochs and trainer.epochs == epochs
    with pytest.raises(ValueError, match="epochs must be a non-negative integer or None"):
        ebm.fit(ebm.RBM(64, 2), data, epochs=2.5)


def test_a_default_run_resumed_from_its_checkpoint_ends_as_the_uninterrupted_one(monkeypatch, tmp_path):
    """Every default (centred update, lr from the model size, epochs from the steps): a run
    stopped after 2 epochs and resumed with ``epochs=None`` ends bit-for-bit as the run that
    was not stopped."""
    monkeypatch.setattr(ebm.training.trainer, "DEFAULT_MIN_STEPS", 12)
    monkeypatch.setattr(ebm.training.trainer, "DEFAULT_EPOCHS", 3)
    data = {"v": digits()[0][:25]}  # 3 steps an epoch: 4 epochs

    class StopAfterTwo:
        def on_epoch_end(self, trainer, epoch, metrics):
            trainer.stop_training = epoch == 2

    straight = ebm.RBM(64, 3, seed=1)
    assert len(ebm.fit(straight, data, metrics=None)) == 4
    stopped, path = ebm.RBM(64, 3, seed=1), tmp_path / "run.pt"
    ebm.fit(stopped, data, metrics=None, checkpoint=path, callbacks=[StopAfterTwo()])
    resumed = ebm.RBM(64, 3, seed=1)
    assert len(ebm.fit(resumed, data, metrics=None, checkpoint=path, resume=path)) == 4
    for name, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
