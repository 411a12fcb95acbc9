"""Progress lines for logs: done/total, rate and time left, every few percent or every N seconds.

tqdm draws on a terminal; a Snakemake job has none, so its log stayed silent between the first
and last line of hours-long training, attack and certification jobs. `Progress` writes plain
lines instead, e.g. ``attack 40% (120/300 batches) 2.5 batches/s, 1m12s left``, through any
``log(line)`` callable (the job's log in the CLI).
"""
from __future__ import annotations

import math
import time
from typing import Callable


def format_duration(seconds: float) -> str:
    """``3725`` → ``1h02m05s``; ``65`` → ``1m05s``; ``7.2`` → ``7s``."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    return f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """Count units of work and log a line each time another ``every`` fraction is done, or
    ``interval_s`` seconds have passed since the last line, and once at the end.

    Args:
        total: units of work in the whole job (steps, batches, images); 0 logs nothing.
        log: where lines go (``log(line)``).
        label: what the job is ("train", "attack", "certify").
        unit: plural name of a unit ("steps").
        every: fraction of ``total`` between lines (0.05: a line at 5 %, 10 %, ...).
        interval_s: also log when this many seconds passed since the last line (long, slow units).
        clock: seconds, monotonic (tests pass a fake clock).
    """

    def __init__(self, total: int, log: Callable[[str], None], label: str, unit: str = "steps",
                 every: float = 0.05, interval_s: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.log, self.label, self.unit = max(0, int(total)), log, label, unit
        self.every, self.interval_s, self.clock = every, interval_s, clock
        self.done = 0
        self.start = self.last_time = clock()
        self.next_fraction = every

    def update(self, n: int = 1) -> None:
        """Record ``n`` more units done; log a line when a threshold is crossed."""
        if self.done >= self.total:  # nothing to count, or finished (the end was logged)
            return
        self.done = min(self.total, self.done + n)
        now, fraction = self.clock(), self.done / self.total
        if fraction >= self.next_fraction - 1e-12 or self.done == self.total or now - self.last_time >= self.interval_s:
            self.log(self.line(now))
            self.last_time = now
            self.next_fraction = (math.floor(fraction / self.every + 1e-9) + 1) * self.every

    def line(self, now: float | None = None) -> str:
        """``<label> 40% (120/300 steps) 2.5 steps/s, 1m12s left`` (``done in`` at the end)."""
        elapsed = (self.clock() if now is None else now) - self.start
        rate = self.done / elapsed if elapsed > 0 else float("inf")
        head = f"{self.label} {100 * self.done / self.total:.0f}% ({self.done}/{self.total} {self.unit})"
        speed = f"{rate:.3g} {self.unit}/s" if math.isfinite(rate) else f"? {self.unit}/s"
        if self.done == self.total:
            return f"{head} {speed}, done in {format_duration(elapsed)}"
        left = (self.total - self.done) / rate if rate > 0 and math.isfinite(rate) else float("nan")
        return f"{head} {speed}, {format_duration(left) if math.isfinite(left) else '?'} left"


def progress_or_none(total: int, log: Callable[[str], None] | None, label: str, unit: str) -> Progress | None:
    """A `Progress` when there is a ``log`` to write to, else None (library calls without a log stay silent)."""
    return Progress(total, log, label, unit) if log is not None else None
