"""The documentation site builds with warnings as errors, and shows what it promises."""

import html
import importlib.util
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
MISSING = [name for name in TOOLS if importlib.util.find_spec(name.split(".")[0]) is None]


def text(page: Path) -> str:
    """A page's text without its tags (code highlighting splits commands into spans)."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


@pytest.mark.skipif(bool(MISSING), reason=f"docs toolchain not installed ({', '.join(MISSING)}): pip install -e '.[dev]'")
def test_docs_build_strict(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    # the benchmarks page is benchmarks/RESULTS.md itself, and getting started has the README's commands
    results_title = (ROOT / "benchmarks" / "RESULTS.md").read_text().splitlines()[0].lstrip("# ").strip()
    assert results_title in text(site / "benchmarks" / "index.html")
    started = text(site / "getting-started" / "index.html")
    assert "python -m pytest -q" in started and "ebm demo" in started
    # the API reference renders the public names from their docstrings
    sampling = (site / "api" / "sampling" / "index.html").read_text()
    for name in ("ebm.sample", "ebm.Chains.summary", "ebm.Chains.to_arviz"):
        assert f'id="{name}"' in sampling
    plots = (site / "api" / "plot" / "index.html").read_text()
    for name in ("trace", "autocorrelation", "running_mean", "energy", "marginals", "samples", "filters", "history"):
        assert f'id="ebm.plot.{name}"' in plots


# ---------------------------------------------------------------------- the pages' code runs
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
#: a page's blocks run in order as one program, in a fresh directory, within this many CPU
#: seconds on one thread (CPU time, not wall time: a loaded machine does not fail the test)
PAGE_SECONDS = 120
#: blocks that are fragments of the text around them, not programs: (page, first line) -> why
FRAGMENTS = {
    ("README.md", "rbm = ebm.CenteredRBM(784, 500)"): "MNIST as X; benchmarks/mnist_rbm.py runs this protocol",
    ("docs/concepts.md", "class Ising(ebm.EnergyModel):"): "the definition the text explains; the tutorials run it",
    ("docs/concepts.md", "chains = ebm.sample(rbm, ebm.Gibbs(), n_chains=100)"): "call shapes, for an rbm of the text",
    ("docs/concepts.md", "chains = ebm.sample(model, ebm.HMC(0.1, 5)"): "call shapes, for a model of the text",
    ("docs/diagnostics.md", "chains = ebm.sample(model, sampler, n_chains=64"): "call shapes, for any model",
    ("docs/diagnostics.md", "from ebm import diagnostics"): "call shapes, for an array x",
    ("docs/structure.md", "i = torch.arange(L)"): "call shapes, for the Ising model of the page",
    ("docs/many-chains.md", "chains = ebm.sample(model, ebm.HMC(), n_chains=1024"): "call shape; posteriors.py runs it",
}
#: blocks whose chains do not mix, where the page says why: (page, first line) -> why
UNMIXED = {
    ("docs/tutorials/ising.md", "temperatures = torch.tensor("): "five temperatures in one call: one check over all",
    ("docs/tutorials/ising.md", "chains = ebm.sample(Ising(16, 1 / 2.3)"): "critical slowing down, shown on purpose",
}
NOT_MIXED = ("r_hat > 1.01", "Chains not mixed")


def blocks(page: Path) -> list[tuple[str, str]]:
    """``(first line, code)`` of each python block of ``page``."""
    return [(code.splitlines()[0], code) for code in FENCE.findall(page.read_text())]


def listed(table: dict, page: Path, first: str) -> bool:
    name = str(page.relative_to(ROOT))
    return any(name == p and first.startswith(start) for p, start in table)


def program(page: Path) -> str:
    """The page's runnable blocks as one script that marks where each block's output starts."""
    parts = ["import sys"]
    for i, (first, code) in enumerate(blocks(page)):
        if not listed(FRAGMENTS, page, first):
            parts += [f"print('@@block {i}'); print('@@block {i}', file=sys.stderr)", code]
    return "\n".join(parts)


def run_timed(command: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``command`` on one thread; its CPU seconds (user + system) and result. Fails on
    its errors."""
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=10 * PAGE_SECONDS)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert result.returncode == 0, result.stderr[-3000:]
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), result


RUNNABLE = [page for page in PAGES if any(not listed(FRAGMENTS, page, first) for first, _ in blocks(page))]


def test_every_page_block_is_a_program_or_a_listed_fragment(tmp_path):
    """Fast: each page's runnable blocks compile and use no undefined name (ruff F821), and
    the lists above name only blocks that exist."""
    for table in (FRAGMENTS, UNMIXED):
        for name, start in table:
            assert any(first.startswith(start) for first, _ in blocks(ROOT / name)), (name, start)
    for page in RUNNABLE:
        script = tmp_path / (str(page.relative_to(ROOT)).replace("/", "_") + ".py")
        script.write_text(program(page))
        compile(script.read_text(), str(script), "exec")
    ruff = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--select", "F821", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    if "No module named ruff" in ruff.stderr:
        pytest.skip("ruff is not installed: pip install -e '.[dev]'")
    assert ruff.returncode == 0, ruff.stdout


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE, ids=[str(p.relative_to(ROOT)) for p in RUNNABLE])
def test_page_runs_quickly_with_mixed_chains(page, tmp_path):
    """Each page runs end to end within PAGE_SECONDS of CPU time, and its chains mix
    (R-hat <= 1.01) unless the page says why not."""
    script = tmp_path / "page.py"
    script.write_text(program(page))
    seconds, result = run_timed([sys.executable, str(script)], tmp_path)
    assert seconds <= PAGE_SECONDS, f"{page.name} took {seconds:.0f} CPU seconds, over {PAGE_SECONDS}"
    outputs = {}
    for stream in (result.stdout, result.stderr):
        for part in stream.split("@@block ")[1:]:
            index, _, text = part.partition("\n")
            outputs[int(index)] = outputs.get(int(index), "") + text
    for i, (first, _) in enumerate(blocks(page)):
        if i in outputs and not listed(UNMIXED, page, first):
            assert not any(flag in outputs[i] for flag in NOT_MIXED), f"block {i} ({first!r}):\n{outputs[i][-3000:]}"


#: examples whose full run (not --fast) the docs point to; rbm_mnist.py needs the MNIST files
EXAMPLES = ["continuous_2d", "ising", "latent_gaussian", "rbm_digits"]


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_within_the_page_limit(name, tmp_path):
    seconds, _ = run_timed([sys.executable, str(ROOT / "examples" / f"{name}.py"), "--out", str(tmp_path)], tmp_path)
    assert seconds <= PAGE_SECONDS, f"examples/{name}.py took {seconds:.0f} CPU seconds, over {PAGE_SECONDS}"
