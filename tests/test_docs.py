"""The documentation site builds with warnings as errors, and shows what it promises."""

import html
import importlib.util
import os
import re
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
