"""thrml's checkerboard block Gibbs on the cases of ``benchmarks/lattice.py`` (run by it, in
an interpreter that has thrml; imports nothing from ebm or torch).

Reads a JSON list of cases on stdin, each ``{"name", "n_sites", "edges": [[i, j], ...],
"weights", "colors": [[sites], ...], "beta", "chains", "sweeps", "repeats"}``, and prints
a JSON ``{name: sweeps per second}`` (best of ``repeats``, compilation excluded).
"""

from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp
from thrml import Block, SamplingSchedule, SpinNode, sample_states
from thrml.models import IsingEBM, IsingSamplingProgram, hinton_init


def rate(case: dict) -> float:
    nodes = [SpinNode() for _ in range(case["n_sites"])]
    edges = [(nodes[i], nodes[j]) for i, j in case["edges"]]
    model = IsingEBM(
        nodes, edges, jnp.zeros(len(nodes)), jnp.asarray(case["weights"], dtype=jnp.float32), jnp.array(case["beta"])
    )
    blocks = [Block([nodes[i] for i in color]) for color in case["colors"]]
    program = IsingSamplingProgram(model, blocks, [])
    key = jax.random.key(0)
    init = hinton_init(key, model, blocks, (case["chains"],))
    schedule = SamplingSchedule(n_warmup=case["sweeps"], n_samples=1, steps_per_sample=1)
    run = jax.jit(jax.vmap(lambda k, i: sample_states(k, program, schedule, i, [], [Block(nodes)])))
    keys = jax.random.split(key, case["chains"])
    jax.block_until_ready(run(keys, init))  # compile
    best = 0.0
    for _ in range(case["repeats"]):
        start = time.perf_counter()
        jax.block_until_ready(run(keys, init))
        best = max(best, case["sweeps"] / (time.perf_counter() - start))
    return best


def main() -> None:
    cases = json.load(sys.stdin)
    print(json.dumps({case["name"]: rate(case) for case in cases}))


if __name__ == "__main__":
    main()
