"""BlackJAX's ChEES-HMC (``blackjax.chees_adaptation`` + ``blackjax.dynamic_hmc``) and MEADS
(``blackjax.meads_adaptation`` + ``blackjax.ghmc``) on the reference posteriors of
``benchmarks/posteriors.py``, for its ``--blackjax-python`` comparison.

Run by ``benchmarks/posteriors.py`` in a subprocess, with the Python of a separate
environment that has ``blackjax`` and ``jax`` (never a dependency of ``ebm``)::

    python3 -m venv /tmp/bjx && /tmp/bjx/bin/pip install blackjax jax
    PYTHONPATH=. python benchmarks/posteriors.py --blackjax-python /tmp/bjx/bin/python

This file imports neither ``torch`` nor ``ebm``: the log densities are written again in JAX
(the same formulas as the energies in ``benchmarks/posteriors.py``; the rotated Gaussian's
precision matrix is passed in a ``.npy`` file). It writes ``draws.npy``, ``(n_steps, n_chains,
D)`` in the sampled coordinates, and ``info.json`` (seconds, divergent transitions, mean
leapfrog steps, tuned step size) to ``--out``; the parent computes the diagnostics with
``ebm.diagnostics`` exactly as for its own draws.

Settings: every chain starts from ``N(0, I)`` as ``ebm.sample`` does; ChEES with BlackJAX's
defaults (harmonic-mean acceptance target 0.651, Halton-jittered lengths, identity mass,
``max_leapfrog_steps=1000``) and Adam at learning rate 0.025 (the ChEES paper's); MEADS with its
defaults (4 folds). Seconds include JAX's compilation.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

Y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(centred: bool):
    def log_density(x):
        mu, log_tau, rest = x[0], x[1], x[2:]
        tau = jnp.exp(log_tau)
        theta = rest if centred else mu + tau * rest
        likelihood = 0.5 * jnp.sum(((Y - theta) / SIGMA) ** 2)
        if centred:
            prior_theta = 0.5 * jnp.sum(((theta - mu) / tau) ** 2) + 8 * log_tau
        else:
            prior_theta = 0.5 * jnp.sum(rest**2)
        return -(likelihood + prior_theta + mu**2 / 50 + jnp.log1p(tau**2 / 25) - log_tau)

    return log_density, 10


def banana():
    def log_density(x):
        return -(0.5 * (x[0] / 10) ** 2 + 0.5 * (x[1] - 0.1 * (x[0] ** 2 - 100)) ** 2)

    return log_density, 2


def rotated_gaussian(precision_path: str):
    precision = jnp.asarray(np.load(precision_path), dtype=jnp.float32)

    def log_density(x):
        return -0.5 * x @ precision @ x

    return log_density, precision.shape[0]


def funnel():
    scale, limit = 3.0, 4.0

    def log_density(z):
        u, x = z[0], z[1]
        v = limit * jnp.tanh(u)
        jacobian = jnp.maximum(jnp.log1p(-(jnp.tanh(u) ** 2)), -1e4)
        return -(0.5 * (v / scale) ** 2 + 0.5 * x**2 * jnp.exp(-v) + 0.5 * v - jacobian)

    return log_density, 2


def posterior(name: str, precision: str | None):
    if name == "eight_schools_centred":
        return eight_schools(True)
    if name == "eight_schools_noncentred":
        return eight_schools(False)
    if name == "banana":
        return banana()
    if name == "funnel":
        return funnel()
    if name == "rotated_gaussian":
        if precision is None:
            raise ValueError("rotated_gaussian needs --precision PATH (a .npy precision matrix)")
        return rotated_gaussian(precision)
    raise ValueError(f"unknown posterior {name!r}")


def draw(kernel, states, args, key):
    """``args.steps`` transitions of ``kernel`` on every chain: draws ``(n_steps, n_chains, D)``,
    divergence flags and leapfrog counts ``(n_steps, n_chains)``."""

    def one_step(states, key):
        keys = jax.random.split(key, args.chains)
        states, info = jax.vmap(kernel.step)(keys, states)
        return states, (states.position, info.is_divergent, info.num_integration_steps)

    _, out = jax.lax.scan(one_step, states, jax.random.split(key, args.steps))
    return out


def run_chees(log_density, dim, args, key):
    import blackjax
    import optax

    init_key, warm_key, sample_key = jax.random.split(key, 3)
    positions = jax.random.normal(init_key, (args.chains, dim))
    warmup = blackjax.chees_adaptation(log_density, args.chains)
    (states, parameters), _ = warmup.run(
        warm_key, positions, 0.1, optax.adam(0.025), args.burn_in, max_sampling_steps=args.steps
    )
    kernel = blackjax.dynamic_hmc(log_density, **parameters)
    return (*draw(kernel, states, args, sample_key), float(parameters["step_size"]))


def run_meads(log_density, dim, args, key):
    import blackjax

    init_key, warm_key, sample_key = jax.random.split(key, 3)
    positions = jax.random.normal(init_key, (args.chains, dim))
    warmup = blackjax.meads_adaptation(log_density, args.chains)
    (states, parameters), _ = warmup.run(warm_key, positions, args.burn_in)
    kernel = blackjax.ghmc(log_density, **parameters)
    return (*draw(kernel, states, args, sample_key), float(parameters["step_size"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posterior", required=True)
    parser.add_argument("--method", choices=("chees", "meads"), default="chees")
    parser.add_argument("--chains", type=int, default=1024)
    parser.add_argument("--burn-in", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", help=".npy precision matrix of the rotated Gaussian")
    parser.add_argument("--out", required=True, help="folder for draws.npy and info.json")
    args = parser.parse_args()
    log_density, dim = posterior(args.posterior, args.precision)
    run = run_chees if args.method == "chees" else run_meads
    start = time.perf_counter()
    draws, divergent, n_leapfrog, step_size = run(log_density, dim, args, jax.random.key(args.seed))
    draws = np.asarray(jax.block_until_ready(draws), dtype=np.float64)
    seconds = time.perf_counter() - start
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "draws.npy", draws)
    info = {
        "seconds": seconds,
        "divergent": int(np.asarray(divergent).sum()),
        "leapfrog": float(np.asarray(n_leapfrog).mean()),
        "step_size": step_size,
        "versions": {"blackjax": __import__("blackjax").__version__, "jax": jax.__version__},
    }
    (out / "info.json").write_text(json.dumps(info))


if __name__ == "__main__":
    main()
