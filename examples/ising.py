"""A user-written energy: the 2-D Ising model, sampled by ebm's generic Gibbs sampler.

The model is one ``energy()`` method; it has no ``conditional()``, so ``ebm.Gibbs`` finds its
interaction graph, colours it (a checkerboard) and updates each colour in one batched
heat-bath step from exact energy differences. Each chain carries its own
inverse temperature, so one ``ebm.sample`` call runs every temperature at once.

The magnetisation and energy per spin are compared with Onsager's exact results for the
infinite lattice (J = 1, k_B = 1): finite lattices round off the transition at
Tc = 2 / ln(1 + √2) ≈ 2.269, and the agreement is close away from it.

    python examples/ising.py --out figures        # L = 16, about a minute on 2 cores
    python examples/ising.py --fast --out /tmp/x  # L = 8, seconds (CI runs this)

Writes ``ising_curves.png`` (m and e against T, with the exact curves) and
``ising_chains.png`` (magnetisation traces of the chains at three temperatures).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from matplotlib.figure import Figure

import ebm

T_CRITICAL = 2.0 / math.log1p(math.sqrt(2.0))


class Ising(ebm.EnergyModel):
    """Periodic L x L Ising model, ``E(s) = -β Σ_<ij> s_i s_j`` over nearest neighbours (nats).

    Args:
        L: side of the lattice.
        beta: inverse temperature, a float or one value per chain (a sequence of length n_chains).
    """

    def __init__(self, L: int, beta):
        super().__init__(s=ebm.Spin(L, L))
        self.register_buffer("beta", torch.as_tensor(beta, dtype=torch.get_default_dtype()))

    def energy(self, state):
        return -self.beta * bond_sum(state["s"])


def bond_sum(s: torch.Tensor) -> torch.Tensor:
    """``Σ_<ij> s_i s_j`` over the 2 L² bonds of each periodic lattice, shape ``s.shape[:-2]``."""
    return (s * s.roll(1, -1) + s * s.roll(1, -2)).sum((-2, -1))


def elliptic_k(k: float) -> float:
    """Complete elliptic integral of the first kind ``K(k) = π / (2 AGM(1, √(1 - k²)))``, modulus ``k < 1``."""
    a, b = 1.0, math.sqrt(1.0 - k * k)
    while abs(a - b) > 1e-15 * a:
        a, b = (a + b) / 2, math.sqrt(a * b)
    return math.pi / (2 * a)


def onsager_energy(T: float) -> float:
    """Exact energy per spin of the infinite lattice at temperature ``T`` (units of J)."""
    beta = 1.0 / T
    t = math.tanh(2 * beta)
    k = 2 * math.sinh(2 * beta) / math.cosh(2 * beta) ** 2
    # At Tc, k = 1 and K diverges, but its prefactor 2 tanh²(2β) - 1 vanishes faster.
    elliptic = 0.0 if abs(2 * t * t - 1) < 1e-12 else (2 / math.pi) * (2 * t * t - 1) * elliptic_k(min(k, 1 - 1e-16))
    return -(1 / t) * (1 + elliptic)


def onsager_magnetisation(T: float) -> float:
    """Exact spontaneous magnetisation per spin, ``(1 - sinh(2β)^-4)^(1/8)`` below Tc, else 0."""
    if T >= T_CRITICAL:
        return 0.0
    return (1 - math.sinh(2 / T) ** -4) ** 0.125


def simulate(L: int, temperatures: list[float], chains_per_T: int, n_steps: int, burn_in: int, seed: int) -> dict:
    """Sample every temperature at once; return per-temperature means and standard errors.

    Returns:
        dict with ``m``, ``m_err``, ``e``, ``e_err`` (lists over temperatures; |m| and energy
        per spin in units of J) and ``m_trace`` ``(n_draws, n_chains)`` for the trace plot.
    """
    betas = torch.tensor([1.0 / T for T in temperatures]).repeat_interleave(chains_per_T)
    model = Ising(L, betas)
    # An ordered start: below Tc a random start can freeze into long-lived stripes, while above
    # Tc the chains forget the order within a few sweeps of burn-in.
    init = {"s": torch.ones(len(betas), L, L)}
    chains = ebm.sample(model, ebm.Gibbs(), n_steps=n_steps, burn_in=burn_in, init=init, seed=seed)
    s = chains["s"]
    m = s.mean((-2, -1)).abs()  # (n_draws, n_chains)
    e = -bond_sum(s) / (L * L)
    out = {"m": [], "m_err": [], "e": [], "e_err": [], "m_trace": s.mean((-2, -1))}
    for i in range(len(temperatures)):
        block = slice(i * chains_per_T, (i + 1) * chains_per_T)
        for name, x in (("m", m[:, block]), ("e", e[:, block])):
            out[name].append(x.mean().item())
            # Chain means are independent: their spread gives the standard error honestly,
            # whatever the autocorrelation within a chain.
            out[name + "_err"].append(x.mean(0).std().item() / math.sqrt(chains_per_T))
    return out


def plot_curves(temperatures: list[float], result: dict, L: int) -> Figure:
    grid = [0.5 + 0.005 * i for i in range(801)]
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key, exact, label in (
        (axes[0], "m", onsager_magnetisation, "magnetisation per spin |m|"),
        (axes[1], "e", onsager_energy, "energy per spin e / J"),
    ):
        ax.plot(grid, [exact(T) for T in grid], color="k", lw=1.2, label="Onsager (infinite lattice)")
        ax.errorbar(temperatures, result[key], yerr=result[key + "_err"], fmt="o", ms=4, label=f"ebm.Gibbs, {L}x{L}")
        ax.axvline(T_CRITICAL, color="0.6", ls=":", lw=1)
        ax.set_xlabel("temperature T")
        ax.set_ylabel(label)
        ax.legend(frameon=False)
    return fig


def plot_chains(temperatures: list[float], result: dict, chains_per_T: int) -> Figure:
    """Traces and histograms of the magnetisation below, near and above Tc (``ebm.plot.trace``)."""
    near = min(range(len(temperatures)), key=lambda i: abs(temperatures[i] - T_CRITICAL))
    picks = sorted({0, near, len(temperatures) - 1})
    series = {
        f"m at T={temperatures[i]:.2f}": result["m_trace"][:, i * chains_per_T : (i + 1) * chains_per_T] for i in picks
    }
    return ebm.plot.trace(series, max_chains=4)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="small lattice and short chains (seconds; for CI)")
    parser.add_argument("--out", type=Path, default=Path("ising-output"), help="folder for the PNG files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.fast:
        L, temperatures, chains_per_T, n_steps, burn_in = 8, [1.5, 2.0, 2.25, 2.5, 3.0, 3.5], 16, 150, 50
    else:
        L, chains_per_T, n_steps, burn_in = 16, 16, 400, 200
        temperatures = [1.5, 1.75, 2.0, 2.1, 2.2, 2.27, 2.35, 2.5, 2.75, 3.0, 3.5, 4.0]
    result = simulate(L, temperatures, chains_per_T, n_steps, burn_in, args.seed)

    print(f"{L}x{L} Ising, {chains_per_T} chains per temperature, {n_steps} sweeps after {burn_in} burn-in")
    print(f"{'T':>6}{'|m|':>10}{'exact':>9}{'e':>10}{'exact':>9}")
    for i, T in enumerate(temperatures):
        print(
            f"{T:>6.2f}{result['m'][i]:>10.4f}{onsager_magnetisation(T):>9.4f}"
            f"{result['e'][i]:>10.4f}{onsager_energy(T):>9.4f}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    for name, fig in (
        ("ising_curves.png", plot_curves(temperatures, result, L)),
        ("ising_chains.png", plot_chains(temperatures, result, chains_per_T)),
    ):
        fig.savefig(args.out / name, dpi=120)
    print(f"wrote ising_curves.png and ising_chains.png to {args.out}")
    return {"temperatures": temperatures, **{k: v for k, v in result.items() if k != "m_trace"}}


if __name__ == "__main__":
    main()
