"""Shared bits of the benchmark scripts: naming the hardware and timing a callable."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable

import torch


def hardware(device: str = "cpu") -> str:
    """A one-line description of the device the numbers come from."""
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def _rate(fn: Callable[[], object], n: int, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def best_rates(fns: dict[str, Callable[[], object]], n: int, repeats: int = 3, device: str = "cpu") -> dict[str, float]:
    """Best of ``repeats`` timings of each callable (each does ``n`` units of work), in units
    per second. The callables are timed in turn, round after round, so that a slow spell of
    the machine hits them alike and their ratios stay fair."""
    for fn in fns.values():
        fn()
    rates = {name: 0.0 for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            rates[name] = max(rates[name], _rate(fn, n, device))
    return rates
