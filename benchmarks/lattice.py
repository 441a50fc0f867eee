"""Discrete lattice models through ``ebm.Gibbs()``'s graph-coloured path, in sweeps per second,
against a hand-written checkerboard torch sweep and (optionally) thrml, all in the same run.

Cases (256 chains each by default): 2-D Ising at L = 16, 32, 64 near βc (the README's
``Ising`` class, unchanged), 3-state Potts at L = 32 at its βc = ln(1 + √3), and a sparse
random ±J spin glass of 4,096 sites (4 random couplings per site on average). ``ebm`` runs
through ``ebm.sample(model, ebm.Gibbs(), ...)`` exactly as a user calls it; discovery of the
interaction graph is timed separately (it is cached per model). The hand-written sweep is
what one writes for each model knowing its colouring (rolls for the lattices, sparse
products for the glass). Each rate is the best of ``--repeats`` timings, taken in turn
(thrml included, in a worker process), so that a busy spell of the machine hits every
method alike; the ratios are the result. ``--clock cpu`` rates each by its process's CPU
time instead of wall-clock time, for a machine shared with other jobs.

thrml (Extropic's JAX block-Gibbs library) is optional: give ``--thrml-python`` (an
interpreter that has it), or ``--install-thrml DIR`` to create a virtual environment there
and ``pip install thrml`` into it; it is never installed otherwise (CI does not). It runs
its ``IsingSamplingProgram`` for the spin cases and a ``FactorSamplingProgram`` of
``SquareCategoricalEBMFactor`` (weights ``β I`` per bond) for the Potts case, with the
same colourings, compiled before any timing.

    python benchmarks/lattice.py [--install-thrml /tmp/thrml-venv | --thrml-python PATH] [--quick] [--clock cpu]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import hardware

import ebm
from ebm.samplers.coloring import greedy_coloring, structure


class Ising(ebm.EnergyModel):
    def __init__(self, L, beta):
        super().__init__(s=ebm.Spin(L, L))
        self.beta = beta

    def energy(self, state):
        s = state["s"]
        return -self.beta * (s * s.roll(1, -1) + s * s.roll(1, -2)).sum((-2, -1))


class Potts(ebm.EnergyModel):
    def __init__(self, q, L, beta):
        super().__init__(x=ebm.Categorical(q, L, L))
        self.beta = beta

    def energy(self, state):
        x = state["x"]
        return -self.beta * (x * x.roll(1, -2) + x * x.roll(1, -3)).sum((-3, -2, -1))


class SpinGlass(ebm.EnergyModel):
    """``E = -β Σ_e J_e s_i s_j`` over a random sparse edge list with ±1 couplings."""

    def __init__(self, n, n_edges, beta, seed=0):
        super().__init__(s=ebm.Spin(n))
        g = torch.Generator().manual_seed(seed)
        i, j = torch.randint(n, (2, 2 * n_edges), generator=g)
        keep = i < j
        pairs = torch.unique(torch.stack([i[keep], j[keep]], 1), dim=0)[:n_edges]
        self.register_buffer("i", pairs[:, 0].contiguous())
        self.register_buffer("j", pairs[:, 1].contiguous())
        self.register_buffer("J", torch.where(torch.rand(len(pairs), generator=g) < 0.5, -1.0, 1.0))
        self.beta = beta

    def energy(self, state):
        s = state["s"]
        return -self.beta * (self.J * s[:, self.i] * s[:, self.j]).sum(-1)


# ---------------------------------------------------------------------- hand-written sweeps
def ising_hand(L, beta, n, generator):
    i = torch.arange(L)
    masks = [((i[:, None] + i[None, :]) % 2) == c for c in (0, 1)]
    s = torch.where(torch.rand(n, L, L, generator=generator) < 0.5, -1.0, 1.0)

    def sweep(k):
        nonlocal s
        for _ in range(k):
            for mask in masks:
                field = s.roll(1, -1) + s.roll(-1, -1) + s.roll(1, -2) + s.roll(-1, -2)
                up = torch.rand(s.shape, generator=generator) < torch.sigmoid(2 * beta * field)
                s = torch.where(mask, torch.where(up, 1.0, -1.0), s)

    return sweep


def potts_hand(q, L, beta, n, generator):
    i = torch.arange(L)
    masks = [(((i[:, None] + i[None, :]) % 2) == c).unsqueeze(-1) for c in (0, 1)]
    x = torch.nn.functional.one_hot(torch.randint(q, (n, L, L), generator=generator), q).float()

    def sweep(k):
        nonlocal x
        for _ in range(k):
            for mask in masks:
                same = x.roll(1, -2) + x.roll(-1, -2) + x.roll(1, -3) + x.roll(-1, -3)
                gumbel = -(-torch.rand(x.shape, generator=generator).log()).log()
                new = torch.nn.functional.one_hot((beta * same + gumbel).argmax(-1), q).float()
                x = torch.where(mask, new, x)

    return sweep


def glass_hand(model, colors, n, generator):
    N = model.variables["s"].size
    rows = torch.cat([model.i, model.j])
    cols = torch.cat([model.j, model.i])
    J = torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.cat([model.J, model.J]) * model.beta, (N, N))
    J = J.coalesce().to_dense()
    parts = [J[c].to_sparse_csr() for c in colors]
    xt = torch.where(torch.rand(N, n, generator=generator) < 0.5, -1.0, 1.0)

    def sweep(k):
        for _ in range(k):
            for c, part in zip(colors, parts, strict=True):
                field = torch.sparse.mm(part, xt)
                up = torch.rand(field.shape, generator=generator) < torch.sigmoid(2 * field)
                xt.index_copy_(0, c, torch.where(up, 1.0, -1.0))

    return sweep


def ebm_sweeps(model, n):
    def sweep(k):
        ebm.sample(model, ebm.Gibbs(), n_chains=n, n_steps=k, thin=k, progress=False)

    return sweep


def lattice_edges(L):
    idx = torch.arange(L * L).reshape(L, L)
    return torch.cat([torch.stack([idx, idx.roll(-1, d)], -1).reshape(-1, 2) for d in (1, 0)])


def checkerboard(L):
    i = torch.arange(L)
    labels = ((i[:, None] + i[None, :]) % 2).flatten()
    return [torch.nonzero(labels == c).flatten() for c in (0, 1)]


class ThrmlWorker:
    """thrml in its own interpreter (``lattice_thrml.py``), all cases compiled up front, each
    run on request so that it is timed in turn with the torch sweeps."""

    def __init__(self, python: str, cases: list[dict], threads: int):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        if threads == 1:
            env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        worker = Path(__file__).with_name("lattice_thrml.py")
        self.process = subprocess.Popen(
            [python, str(worker)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.names = {case["name"] for case in cases}
        self._send(cases)
        if self._receive() != "ready":
            raise RuntimeError("the thrml worker did not start")

    def _send(self, message) -> None:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def _receive(self):
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the thrml worker stopped (exit code {self.process.wait()})")
        return json.loads(line)

    def time(self, name: str) -> tuple[float, float]:
        """``(wall, cpu)`` seconds of one run of the case's sweeps."""
        self._send(name)
        out = self._receive()
        return out["wall"], out["cpu"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def best_rates(fns: dict, k: int, repeats: int, clock: int) -> dict[str, float]:
    """Sweeps per second of each ``fn() -> (wall, cpu)`` (each runs ``k`` sweeps), best of
    ``repeats``, timed in turn round after round so that a busy spell hits them alike."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, 0.0)
    for _ in range(repeats):
        for name, fn in fns.items():
            best[name] = max(best[name], k / fn()[clock])
    return best


def install_thrml(directory: str) -> str:
    python = Path(directory) / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", directory], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "thrml"], check=True)
    return str(python)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer sweeps (noisier)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of torch and of thrml's XLA")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="rate by wall-clock time (a quiet machine) or by each process's CPU time (a busy one)",
    )
    parser.add_argument("--thrml-python", help="an interpreter with thrml installed")
    parser.add_argument("--install-thrml", metavar="DIR", help="create a venv in DIR and pip install thrml there")
    args = parser.parse_args()
    n, scale, clock = args.chains, (0.25 if args.quick else 1.0), ("wall", "cpu").index(args.clock)
    torch.set_num_threads(args.threads)
    python = install_thrml(args.install_thrml) if args.install_thrml else args.thrml_python
    start = time.perf_counter()
    print(
        f"hardware: {hardware()}; float32, {n} chains, {args.clock} clock; load average at start {os.getloadavg()}",
        flush=True,
    )
    generator = torch.Generator().manual_seed(0)
    beta_c = math.log(1 + math.sqrt(2)) / 2
    cases = [(f"ising L={L}", Ising(L, beta_c), L) for L in (16, 32, 64)]
    cases += [("potts q=3 L=32", Potts(3, 32, math.log(1 + math.sqrt(3))), 32)]
    cases += [("spin glass N=4096", SpinGlass(4096, 8192, 1.0), None)]
    sweeps = {"ising L=16": 400, "ising L=32": 160, "ising L=64": 40, "potts q=3 L=32": 60, "spin glass N=4096": 60}
    prepared, thrml_cases = [], []
    for name, model, L in cases:
        k = max(4, int(sweeps[name] * scale))
        t = time.perf_counter()
        found = structure(model, next(iter(model.variables)), model.random_state(1))
        discovery = time.perf_counter() - t
        if name.startswith("ising"):
            hand = ising_hand(L, beta_c, n, generator)
            edges, colors = lattice_edges(L), checkerboard(L)
            weights = [1.0] * len(edges)
        elif name.startswith("potts"):
            hand = potts_hand(3, L, model.beta, n, generator)
            edges, colors = lattice_edges(L), checkerboard(L)
            weights = [1.0] * len(edges)
        else:
            adjacency = torch.zeros(4096, 4096, dtype=torch.bool)
            adjacency[model.i, model.j] = adjacency[model.j, model.i] = True
            labels = torch.as_tensor(greedy_coloring(adjacency))
            colors = [torch.nonzero(labels == c).flatten() for c in labels.unique()]
            hand = glass_hand(model, colors, n, generator)
            edges, weights = torch.stack([model.i, model.j], 1), model.J.tolist()
        if edges is not None:
            thrml_cases.append(
                {
                    "name": name,
                    "n_sites": L * L if L else model.variables["s"].size,
                    "q": 3 if name.startswith("potts") else None,
                    "edges": edges.tolist(),
                    "weights": weights,
                    "colors": [c.tolist() for c in colors],
                    "beta": model.beta,
                    "chains": n,
                    "sweeps": k,
                }
            )
        prepared.append((name, model, k, hand, len(found.colors), discovery))
    thrml = ThrmlWorker(python, thrml_cases, args.threads) if python else None
    rows = []
    try:
        for name, model, k, hand, n_colors, discovery in prepared:
            ours = ebm_sweeps(model, n)
            fns = {
                "ebm": lambda ours=ours, k=k: timed(lambda: ours(k)),
                "hand": lambda hand=hand, k=k: timed(lambda: hand(k)),
            }
            if thrml is not None and name in thrml.names:
                fns["thrml"] = lambda name=name: thrml.time(name)
            rates = best_rates(fns, k, args.repeats, clock)
            rows.append((name, rates, n_colors, discovery))
    finally:
        if thrml is not None:
            thrml.close()
    print(
        f"{'case':>18} {'colours':>7} {'discovery s':>11} {'ebm sweeps/s':>12} {'hand sweeps/s':>13} "
        f"{'ebm/hand':>8} {'thrml sweeps/s':>14} {'ebm/thrml':>9}"
    )
    for name, rates, n_colors, discovery in rows:
        rate, hand, t = rates["ebm"], rates["hand"], rates.get("thrml")
        thrml_cols = f"{t:14.1f} {rate / t:9.2f}" if t else f"{'-':>14} {'-':>9}"
        print(f"{name:>18} {n_colors:7d} {discovery:11.2f} {rate:12.1f} {hand:13.1f} {rate / hand:8.2f} {thrml_cols}")
    if not python:
        print("thrml: not measured (pass --thrml-python or --install-thrml DIR)")
    print(f"load average at end {os.getloadavg()}; total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
