"""The DESIGN.md public-API snippets for the foundation run as written."""

import math

import torch

import ebm
import ebm.datasets


class Ising(ebm.EnergyModel):
    def __init__(self, L, beta):
        super().__init__(s=ebm.Spin(L, L))  # also ebm.Binary(...), ebm.Real(...)
        self.beta = beta

    def energy(self, state):  # state: dict name -> (batch, *shape)
        s = state["s"]
        return -self.beta * (s * s.roll(1, -1) + s * s.roll(1, -2)).sum((-2, -1))  # (batch,)


def test_ising_snippet():
    model = Ising(4, 0.3)
    assert model.variables == {"s": ebm.Spin(4, 4)}
    chains = ebm.sample(
        model, ebm.Gibbs(), n_chains=256, n_steps=1000, burn_in=100, thin=1, observed=None, init=None, seed=0
    )
    assert chains["s"].shape == (1000, 256, 4, 4)
    assert chains.energy.shape == (1000, 256)
    assert chains.last["s"].shape == (256, 4, 4)
    summary = chains.summary()
    assert set(summary["s"]) >= {"mean", "sd", "mcse", "ess", "rhat"}
    # the energy of a 4x4 periodic Ising model at beta=0.3, exactly: d log Z / d beta = -<E>/beta
    beta = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    exact = Ising(4, beta)
    states = torch.tensor([[1.0 if (k >> i) & 1 else -1.0 for i in range(16)] for k in range(2**16)])
    log_z = torch.logsumexp(-exact.energy({"s": states.double().reshape(-1, 4, 4)}), 0)
    (grad,) = torch.autograd.grad(log_z, beta)
    mean_energy = -grad.item() * 0.3
    energy = chains.energy.double()
    mcse = energy.std() / summary["energy"]["ess"].sqrt()
    assert abs(energy.mean().item() - mean_energy) < 5 * mcse
    assert math.isclose(ebm.log_partition(model), log_z.item(), abs_tol=1e-4)


def test_rbm_snippets():
    rbm = ebm.RBM(n_visible=64, n_hidden=16)
    assert rbm.W.shape == (64, 16) and rbm.a.shape == (64,) and rbm.b.shape == (16,)
    assert isinstance(rbm.conditional("h", rbm.random_state(3)), torch.distributions.Distribution)
    data = (torch.rand(10, 64) < 0.3).float()
    chains = ebm.sample(rbm, ebm.Gibbs(), n_steps=5, observed={"v": data})
    assert chains.n_chains == 10
    log_z = ebm.log_partition(rbm, method="exact")
    ll = ebm.log_likelihood(rbm, {"v": data}, log_z=None)
    assert ll.shape == (10,) and float(ll.max()) < 0 and isinstance(float(log_z), float)
    assert rbm.free_energy({"v": data}).shape == (10,)


def test_training_evaluation_plot_and_continuous_snippets(one_thread):
    X, _ = ebm.datasets.digits("train")
    model = ebm.RBM(n_visible=64, n_hidden=8)
    history = ebm.fit(
        model, {"v": X}, sampler=ebm.Gibbs(), method="pcd", k=1,
        epochs=2, batch_size=100, n_chains=100, optimizer=None, lr=0.01, seed=0,
    )  # fmt: skip
    assert len(history) == 2
    log_z = ebm.log_partition(model, method="ais", n_betas=10_000, n_runs=100)
    exact = ebm.log_partition(model, method="exact")
    assert abs(float(log_z) - float(exact)) < 4 * log_z.stderr + 1e-6
    chains = ebm.sample(model, ebm.Gibbs(), n_chains=16, n_steps=50)
    assert type(ebm.plot.trace(chains)).__name__ == "Figure"
    assert type(ebm.plot.autocorrelation(chains)).__name__ == "Figure"

    class Gaussian(ebm.EnergyModel):
        def __init__(self):
            super().__init__(x=ebm.Real(3))
            self.scale = torch.nn.Parameter(torch.ones(3))

        def energy(self, state):
            return 0.5 * (state["x"] / self.scale).square().sum(-1)

    for sampler in (ebm.Langevin(0.5, metropolis=True), ebm.HMC(0.3, 5)):
        draws = ebm.sample(Gaussian(), sampler, n_chains=64, n_steps=50, burn_in=50)
        assert draws["x"].shape == (50, 64, 3) and "accept_prob" in draws.stats
