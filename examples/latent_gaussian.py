"""Latent-variable training with clamped sampling, checked against closed-form PCA.

``ebm.LinearGaussian`` is probabilistic PCA as an energy,
``E(x, z) = |x − Wz − μ|²/2σ² + |z|²/2``. Everything about it is known in closed form, so
each piece of the generic machinery can be checked:

1. Clamped sampling: HMC on ``z`` with ``x`` clamped to one data row must reproduce the
   Gaussian posterior ``p(z | x)`` (mean and covariance), judged by MCSE z-scores.
2. Training with the generic eq. 4 gradient: the data phase samples ``z`` with ``x``
   clamped (HMC), the model phase samples ``(x, z)`` with persistent HMC chains. The learned
   covariance ``WWᵀ + σ²I`` should approach the maximum-likelihood solution (Tipping &
   Bishop), whose log-likelihood is the ceiling; the gap is reported in nats per row.

    python examples/latent_gaussian.py --out figures          # about a minute on 2 cores
    python examples/latent_gaussian.py --fast --out /tmp/x    # seconds (CI runs this)

Writes ``latent_gaussian_posterior.png`` (posterior draws of ``z`` for one row, with the
exact mean), ``latent_gaussian_covariance.png`` (learned vs maximum-likelihood covariance)
and ``latent_gaussian_history.png`` (log-likelihood per epoch).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from matplotlib.figure import Figure

import ebm
from ebm.diagnostics import mcse


def make_data(n: int, d: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` rows of a ``k``-factor Gaussian in ``d`` dimensions with noise sd 0.5."""
    loading = torch.randn(d, k, generator=generator) * 1.5
    offset = torch.linspace(-1.0, 1.0, d)
    return torch.randn(n, k, generator=generator) @ loading.T + 0.5 * torch.randn(n, d, generator=generator) + offset


class MarginalLogLikelihood:
    """Adds the exact mean ``log p(x)`` (z integrated out, nats per row) to each epoch's metrics."""

    def __init__(self, data: torch.Tensor):
        self.data = data

    def on_epoch_end(self, trainer, epoch, metrics):
        with torch.no_grad():
            metrics["log_likelihood"] = trainer.model.marginal_log_prob(self.data).mean().item()


def posterior_check(model: ebm.LinearGaussian, x: torch.Tensor, fast: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``z | x`` by HMC with ``x`` clamped; z-scores of the posterior mean and variances."""
    # target_accept 0.8 keeps the jittered step clear of the leapfrog stability limit (ε = 2
    # in the whitened 2-D posterior), where 0.65 would put it in this low dimension.
    sampler = ebm.HMC(0.1, 5, target_accept=0.8)
    chains = ebm.sample(model, sampler, n_chains=200, n_steps=200 if fast else 1000, burn_in=200, observed={"x": x}, seed=0)
    exact = model.conditional("z", {"x": x.unsqueeze(0)})
    mean = exact.loc.detach().squeeze(0).double()
    variance = exact.covariance_matrix.detach().squeeze(0).diagonal().double()
    z = chains["z"].double()
    square = (z - mean).square()
    scores = torch.cat([(z.mean((0, 1)) - mean).abs() / mcse(z), (square.mean((0, 1)) - variance).abs() / mcse(square)])
    return chains["z"], scores


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--fast", action="store_true", help="a small, quick run (CI)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    fast = args.fast
    d, k = 6, 2
    n, epochs = (500, 8) if fast else (2000, 30)

    generator = torch.Generator().manual_seed(args.seed)
    data = make_data(n, d, k, generator)
    best = ebm.LinearGaussian.maximum_likelihood(data, k)
    with torch.no_grad():
        ll_best = best.marginal_log_prob(data).mean().item()

    draws, scores = posterior_check(best, data[0], fast)
    print(f"clamped HMC on z | x: max |z-score| of posterior mean and variances {scores.max():.2f}")

    model = ebm.LinearGaussian(d, k, seed=args.seed)
    with torch.no_grad():
        ll_start = model.marginal_log_prob(data).mean().item()
    # HMC for both phases. The data phase starts z from N(0, I) and needs enough steps to
    # reach p(z | x) (k_data); the persistent model-phase chains only need to keep up.
    sampler = ebm.HMC(0.1, 3, adapt_step_size=False, adapt_mass=False)
    start = time.perf_counter()
    history = ebm.fit(
        model, {"x": data}, sampler=sampler, method="pcd", k=3, k_data=15, epochs=epochs, batch_size=50,
        n_chains=200, lr=0.03, seed=args.seed, metrics=[], callbacks=[MarginalLogLikelihood(data)], progress=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    with torch.no_grad():
        learned, exact = model.covariance(), best.covariance()
    ll_end = history[-1]["log_likelihood"]
    relative = ((learned - exact).norm() / exact.norm()).item()
    print(
        f"mean log-likelihood: start {ll_start:.3f}, trained {ll_end:.3f}, maximum likelihood {ll_best:.3f} nats "
        f"(gap {ll_best - ll_end:.3f}); |C − C_ML| / |C_ML| = {relative:.3f}; {seconds:.1f} s"
    )

    posterior = Figure(figsize=(4.5, 4))
    ax = posterior.subplots()
    flat = draws.flatten(0, 1)[:4000].numpy()
    ax.scatter(flat[:, 0], flat[:, 1], s=2, alpha=0.3, label="HMC draws of z | x")
    mean = best.conditional("z", {"x": data[:1]}).loc.detach().squeeze(0).numpy()
    ax.plot(mean[0], mean[1], "r*", ms=14, label="exact posterior mean")
    ax.set(xlabel="z₁", ylabel="z₂", title="clamped sampling of z given x")
    ax.legend(loc="best", fontsize=8)
    covariance = Figure(figsize=(8, 3.6))
    axes = covariance.subplots(1, 2)
    limit = exact.abs().max().item()
    for a, (matrix, title) in zip(axes, [(learned, "learned WWᵀ + σ²I"), (exact, "maximum likelihood")], strict=True):
        image = a.imshow(matrix.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
        a.set_title(title)
    covariance.colorbar(image, ax=list(axes))
    figures = {
        "latent_gaussian_posterior.png": posterior,
        "latent_gaussian_covariance.png": covariance,
        "latent_gaussian_history.png": ebm.plot.history(history, ["log_likelihood", "loss"]),
    }
    for name, figure in figures.items():
        figure.savefig(args.out / name, dpi=90)
    return {
        "posterior_z_scores": scores,
        "ll_start": ll_start,
        "ll_end": ll_end,
        "ll_best": ll_best,
        "relative_covariance_error": relative,
        "history": history,
        "seconds": seconds,
    }


if __name__ == "__main__":
    main()
