"""MkDocs hook: the API reference, one page per area, generated from ``ebm/__init__.py``.

The public names are read statically (no import of torch) from the ``from ebm... import``
lines of ``ebm/__init__.py`` that ``__all__`` lists, grouped into areas by the module they
come from, and rendered by mkdocstrings (``::: ebm.Name``). A name added to the package's
public API therefore shows up in the docs without editing ``mkdocs.yml``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
NAV_TITLE = "API reference"

# (page, title, module prefixes whose public names belong on the page)
AREAS = [
    ("models", "Models and variables", ("ebm.model", "ebm.variables", "ebm.models", "ebm.io")),
    ("sampling", "Sampling and chains", ("ebm.chains", "ebm.summary")),
    ("samplers", "Samplers", ("ebm.samplers",)),
    ("training", "Training", ("ebm.training",)),
    ("evaluation", "Evaluation", ("ebm.evaluation",)),
    ("diagnostics", "Diagnostics", ("ebm.diagnostics",)),
    ("plot", "Plots", ("ebm.plot",)),
    ("datasets", "Datasets", ("ebm.datasets",)),
    ("other", "Other", ("ebm",)),
]
# Documented beside the public names though not exported: what public calls return or need.
EXTRA = {
    "sampling": ["ebm.summary.Summary"],
    "datasets": ["ebm.datasets"],
    "training": ["ebm.callbacks.TensorBoard", "ebm.sklearn.BernoulliRBM", "ebm.sklearn.GaussianRBM"],
}


def public_names(init: Path = ROOT / "ebm" / "__init__.py") -> list[tuple[str, str]]:
    """``(public path, defining module)`` of each name in ``ebm.__all__``, in import order."""
    tree = ast.parse(init.read_text())
    exported: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            exported = set(ast.literal_eval(node.value))
    out = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ebm":
            for alias in node.names:
                name = alias.asname or alias.name
                if name in exported:
                    module = f"ebm.{alias.name}" if node.module == "ebm" else node.module
                    out.append((f"ebm.{name}", module))
    return out


def pages() -> dict[str, tuple[str, list[str]]]:
    """``{page: (title, [object paths])}`` for the areas that have something to show."""
    content: dict[str, list[tuple[int, str]]] = {page: [] for page, _, _ in AREAS}
    for path, module in public_names():
        for page, _, prefixes in AREAS:
            rank = next((i for i, m in enumerate(prefixes) if module == m or module.startswith(m + ".")), None)
            if rank is not None:
                content[page].append((rank, path))  # the area's module order: base classes first
                break
    content = {page: [path for _, path in sorted(items, key=lambda item: item[0])] for page, items in content.items()}
    for page, paths in EXTRA.items():
        content[page] += [p for p in paths if _exists(p)]
    return {page: (title, content[page]) for page, title, _ in AREAS if content[page]}


def _exists(path: str) -> bool:
    """Whether module ``ebm.x`` (or the module of ``ebm.x.Name``) is in the source tree."""
    parts = path.split(".")
    for n in (len(parts), len(parts) - 1):
        base = ROOT.joinpath(*parts[:n])
        if base.with_suffix(".py").exists() or (base / "__init__.py").exists():
            return True
    return False


def on_config(config):
    entry = next((e for e in config["nav"] if isinstance(e, dict) and NAV_TITLE in e), None)
    if entry is None:
        raise ValueError(f"mkdocs.yml nav needs an '{NAV_TITLE}: []' entry for the generated API pages")
    entry[NAV_TITLE] = [{title: f"api/{page}.md"} for page, (title, _) in pages().items()]
    return config


def on_files(files, config):
    for page, (title, paths) in pages().items():
        body = "\n\n".join(f"::: {path}" for path in paths)
        text = f"# {title}\n\n{body}\n"
        files.append(File.generated(config, f"api/{page}.md", content=text))
    return files
