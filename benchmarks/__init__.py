"""Benchmarks: the project's hot paths measured beside plain baselines, in the same run.

``python -m benchmarks`` (or ``make bench``) runs them all and writes one JSON per machine to
``benchmarks/results/<machine-id>.json``; see ``benchmarks/README.md``. This module holds the
timing and machine-description helpers the benchmarks share.

Timing protocol: every contender is called once untimed (warm-up), then the contenders are
called in alternating order (A B C, C B A, A B C, ...) ``repeats`` times, so that a change in
machine load during the run hits all of them alike; the median of the repeats is reported.
"""
from __future__ import annotations

import os
import platform
import re
import socket
import statistics
import sys
import time
from typing import Callable

import torch


def interleaved_times(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                      sync: Callable[[], None] = lambda: None) -> dict[str, list[float]]:
    """Seconds of each call of each contender, alternating the order every repeat.

    Args:
        fns: name → zero-argument callable (one measured unit of work).
        repeats: timed calls per contender; warmup: untimed calls per contender first.
        sync: called before and after each timed call (e.g. ``torch.cuda.synchronize``).

    Returns:
        name → list of ``repeats`` durations in seconds.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    names, times = list(fns), {name: [] for name in fns}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            sync()
            start = time.perf_counter()
            fns[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> float:
    """Relative spread of repeated timings: (max - min) / median (0 for a single value)."""
    return (max(values) - min(values)) / statistics.median(values) if len(values) > 1 else 0.0


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def machine_id() -> str:
    """A file-name-safe id of this machine and software: ``<hostname>-<cpu model>-torch<version>``."""
    raw = f"{socket.gethostname()}-{cpu_model()}-torch{torch.__version__}"
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9.]+", "-", raw.lower())).strip("-")


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info() -> dict:
    """Where and with what a benchmark ran: host, CPU, cores, threads, library versions, load."""
    import timm

    return {
        "machine_id": machine_id(), "hostname": socket.gethostname(), "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__, "timm": timm.__version__, "python": sys.version.split()[0],
        "platform": platform.platform(), "load_average": load_average(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
