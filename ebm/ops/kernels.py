"""The compiled CPU kernels of ``ebm.ops`` (``csrc/*.cpp``), built once on first use.

``kernels()`` compiles the C++ sources with ``torch.utils.cpp_extension.load`` (gcc/g++ and
ninja; tens of seconds the first time, then loaded from torch's extensions cache, keyed by
the sources and flags) and returns the module, or ``None`` when they cannot be used: the
environment variable ``EBM_KERNELS=0``, no compiler or ninja, or a failed build (one
warning). Callers then take their eager torch path, which gives the same distribution
(not the same random stream).

The sources are compiled for the host CPU (``-march=native``); the extension's name carries
a hash of the CPU's flags and of the sources, so that a shared cache never serves a build
for another CPU or other sources.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType

SOURCES = ("bernoulli.cpp", "rbm.cpp")
#: set to "0" to use the eager torch paths only
ENV = "EBM_KERNELS"

_lock = threading.Lock()
_state: dict[str, ModuleType | None] = {}


def enabled() -> bool:
    """Whether the kernels may be used (``EBM_KERNELS`` is not ``0``)."""
    return os.environ.get(ENV, "1").strip() != "0"


def _cpu_tag() -> str:
    flags = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags += line
                break
    except OSError:
        pass
    return hashlib.sha1(flags.encode()).hexdigest()[:10]


def _source_tag(paths: list[Path], flags: list[str]) -> str:
    digest = hashlib.sha1(" ".join(flags).encode())
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def _announce_build(name: str) -> None:
    """One line on stderr before a first build (tens of seconds of silence otherwise), from
    the first process only under ``torchrun`` (``RANK``); nothing when the module is cached."""
    from torch.utils import cpp_extension

    if os.environ.get("RANK", "0") != "0":
        return
    try:  # torch's own cache location; a torch without it just builds silently
        directory = Path(cpp_extension._get_build_directory(name, verbose=False))
    except Exception:
        return
    if not (directory / f"{name}{cpp_extension.LIB_EXT}").exists():
        print(
            f"ebm: compiling its C++ CPU kernels once (about 30 s; cached in {directory.parent}; {ENV}=0 skips them)",
            file=sys.stderr,
            flush=True,
        )


def _build() -> ModuleType:
    from torch.utils import cpp_extension

    csrc = Path(__file__).with_name("csrc")
    sources = [csrc / name for name in SOURCES]
    # -fno-trapping-math lets gcc vectorise the branch-free clamps (no value changes)
    flags = ["-O3", "-march=native", "-fno-trapping-math", "-fopenmp"]
    # named after the sources and flags too: two checkouts with different sources (or versions of the
    # package) sharing torch's extensions cache never load or rebuild each other's module
    name = f"ebm_kernels_{_cpu_tag()}_{_source_tag(sorted(csrc.glob('*.[ch]*')), flags)}"
    _announce_build(name)
    return cpp_extension.load(
        name=name,
        sources=[str(path) for path in sources],
        extra_cflags=flags,
        extra_ldflags=["-fopenmp"],
        verbose=False,
    )


def kernels() -> ModuleType | None:
    """The compiled kernels module, or ``None`` (disabled or unavailable: eager fallback)."""
    if not enabled():
        return None
    if "module" not in _state:
        with _lock:
            if "module" not in _state:
                try:
                    _state["module"] = _build()
                except Exception as error:  # no compiler, no ninja, a failed build: all fall back
                    warnings.warn(
                        f"ebm: the compiled CPU kernels are unavailable ({type(error).__name__}: "
                        f"{str(error).strip().splitlines()[-1] if str(error).strip() else ''}); "
                        f"using the slower torch path (set {ENV}=0 to silence this)",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    _state["module"] = None
    return _state["module"]
