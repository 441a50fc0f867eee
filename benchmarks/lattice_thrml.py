"""thrml's checkerboard block Gibbs on the cases of ``benchmarks/lattice.py``: a worker it
starts in an interpreter that has thrml (imports nothing from ebm or torch), so that thrml
is timed in turn with the torch sweeps, round after round.

Protocol, one JSON document per line: stdin first gets the list of cases, each ``{"name",
"n_sites", "edges": [[i, j], ...], "weights", "colors": [[sites], ...], "beta", "chains",
"sweeps", "q"}`` (``q``: categories of a Potts case, else null); the worker compiles them
all and prints ``"ready"``. Then each line of stdin is a case name: the worker runs that
case's sweeps once and prints ``{"wall": seconds, "cpu": seconds}`` (compilation excluded;
``cpu`` is the process's CPU time).
"""

from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp
from thrml import Block, CategoricalNode, SamplingSchedule, SpinNode, sample_states
from thrml.block_sampling import BlockGibbsSpec
from thrml.factor import FactorSamplingProgram
from thrml.models import IsingEBM, IsingSamplingProgram, hinton_init
from thrml.models.discrete_ebm import CategoricalGibbsConditional, SquareCategoricalEBMFactor


def ising_program(case: dict, key):
    """thrml's Ising program for ``E = -β Σ_e w_e s_i s_j``, and random initial blocks."""
    nodes = [SpinNode() for _ in range(case["n_sites"])]
    edges = [(nodes[i], nodes[j]) for i, j in case["edges"]]
    model = IsingEBM(
        nodes, edges, jnp.zeros(len(nodes)), jnp.asarray(case["weights"], dtype=jnp.float32), jnp.array(case["beta"])
    )
    blocks = [Block([nodes[i] for i in color]) for color in case["colors"]]
    program = IsingSamplingProgram(model, blocks, [])
    return nodes, program, hinton_init(key, model, blocks, (case["chains"],))


def potts_program(case: dict, key):
    """thrml's factor program for the Potts energy ``E = -β Σ_e w_e δ(x_i, x_j)`` over ``q``
    categories (one ``q x q`` weight matrix ``β w_e I`` per edge), and random initial blocks."""
    q = case["q"]
    nodes = [CategoricalNode() for _ in range(case["n_sites"])]
    weights = case["beta"] * jnp.asarray(case["weights"], dtype=jnp.float32)[:, None, None] * jnp.eye(q)
    tails = Block([nodes[i] for i, _ in case["edges"]])
    heads = Block([nodes[j] for _, j in case["edges"]])
    factor = SquareCategoricalEBMFactor([tails, heads], weights)
    blocks = [Block([nodes[i] for i in color]) for color in case["colors"]]
    spec = BlockGibbsSpec(blocks, [], {CategoricalNode: jax.ShapeDtypeStruct((), jnp.uint8)})
    program = FactorSamplingProgram(spec, [CategoricalGibbsConditional(q) for _ in spec.free_blocks], [factor], [])
    keys = jax.random.split(key, len(blocks))
    init = [
        jax.random.randint(k, (case["chains"], len(b)), 0, q, dtype=jnp.uint8) for k, b in zip(keys, blocks, strict=True)
    ]
    return nodes, program, init


def compile_case(case: dict):
    """A function of no arguments that runs the case's sweeps and waits for the result."""
    key = jax.random.key(0)
    nodes, program, init = (potts_program if case.get("q") else ising_program)(case, key)
    schedule = SamplingSchedule(n_warmup=case["sweeps"], n_samples=1, steps_per_sample=1)
    run = jax.jit(jax.vmap(lambda k, i: sample_states(k, program, schedule, i, [], [Block(nodes)])))
    keys = jax.random.split(key, case["chains"])
    jax.block_until_ready(run(keys, init))  # compile
    return lambda: jax.block_until_ready(run(keys, init))


def main() -> None:
    runs = {case["name"]: compile_case(case) for case in json.loads(sys.stdin.readline())}
    print(json.dumps("ready"), flush=True)
    for line in sys.stdin:
        run = runs[json.loads(line)]
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}), flush=True)


if __name__ == "__main__":
    main()
