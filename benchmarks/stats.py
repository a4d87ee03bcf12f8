"""Measurement helpers with no model code: summaries, ratios, round-robin timing, memory, goals.

Everything here is plain arithmetic over lists of seconds / bytes, so ``tests/test_benchmarks.py``
checks it against independent computations.
"""
from __future__ import annotations

import ctypes
import gc
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

# ---------------------------------------------------------------------------------------------
# summaries and ratios


def summarize(times: Sequence[float]) -> dict:
    """{'min', 'median', 'n'} of a list of measurements (seconds, bytes, ...)."""
    xs = [float(x) for x in times]
    if not xs:
        raise ValueError("no measurements to summarise")
    return {"min": min(xs), "median": statistics.median(xs), "n": len(xs)}


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is not positive."""
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or b <= 0:
        return None
    return a / b


def ratios(summaries: Mapping[str, dict], reference: str, stat: str = "median") -> dict[str, float | None]:
    """``summaries[label][stat] / summaries[reference][stat]`` for every label."""
    ref = summaries[reference][stat]
    return {label: ratio(s[stat], ref) for label, s in summaries.items()}


# ---------------------------------------------------------------------------------------------
# timing


def timed(fn: Callable[[], object], setup: Callable[[], object] | None = None) -> Callable[[int], float]:
    """A round-robin task: run ``setup()`` untimed, then time ``fn()``; returns seconds."""

    def task(_round: int) -> float:
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    return task


def round_robin(tasks: Mapping[str, Callable[[int], float]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Interleave the tasks: every round runs each task once, so machine noise hits all alike.

    ``tasks[label](round) -> seconds`` (the task times itself, so untimed setup stays out).  The
    order rotates by one each round (no task always runs first, right after another's cache
    effects).  ``warmup`` rounds run first and are discarded.  -> {label: [seconds] * rounds}"""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    labels = list(tasks)
    out: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(-warmup, rounds):
        shift = r % len(labels) if labels else 0
        for label in labels[shift:] + labels[:shift]:
            secs = tasks[label](max(r, 0))
            if r >= 0:
                out[label].append(float(secs))
    return out


# ---------------------------------------------------------------------------------------------
# memory (Linux /proc; None elsewhere)


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    """Current resident set size of this process."""
    return _status_kb("VmRSS")


def peak_rss_bytes() -> int | None:
    """High-water mark of the resident set size (VmHWM) since start or the last reset."""
    return _status_kb("VmHWM")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (writes 5 to /proc/self/clear_refs); False where refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def release_memory() -> None:
    """gc, then hand freed heap pages back to the OS (glibc malloc_trim), so RSS deltas start low."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_rss_delta(fn: Callable[[], object]) -> int | None:
    """Growth of the peak RSS while ``fn()`` runs: VmHWM (reset just before) minus RSS before.
    None where /proc or the reset is unavailable."""
    release_memory()
    before = rss_bytes()
    if before is None or not reset_peak_rss():
        fn()
        return None
    fn()
    peak = peak_rss_bytes()
    return None if peak is None else max(0, peak - before)


# ---------------------------------------------------------------------------------------------
# goals


@dataclass
class Goal:
    """One efficiency goal: ``value op threshold`` (op '<=' or '>=').  A missing value FAILs."""

    name: str
    value: float | None
    op: str
    threshold: float
    detail: str = ""

    def __post_init__(self) -> None:
        if self.op not in ("<=", ">="):
            raise ValueError(f"op must be '<=' or '>=', got {self.op!r}")

    @property
    def passed(self) -> bool:
        if self.value is None or not math.isfinite(self.value):
            return False
        return self.value <= self.threshold if self.op == "<=" else self.value >= self.threshold

    @property
    def status(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed, "status": self.status}

    def line(self) -> str:
        v = "not measured" if self.value is None else f"{self.value:.3f}"
        return f"[{self.status}] {self.name}: {v} (goal {self.op} {self.threshold:g}){' — ' + self.detail if self.detail else ''}"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"  # pragma: no cover


def fmt_ratio(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}x"


def cpu_info() -> dict:
    return {"cpu_count": os.cpu_count(), "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


# ---------------------------------------------------------------------------------------------
# trends


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict:
    """Least-squares line y = intercept + slope * x: {'slope', 'intercept', 'r2', 'n'} (r2 = 1 - SS_res / SS_tot;
    None when every y is equal).  Needs >= 2 distinct x."""
    x, y = [float(v) for v in xs], [float(v) for v in ys]
    if len(x) != len(y):
        raise ValueError(f"{len(x)} x values but {len(y)} y values")
    n = len(x)
    mx, my = (sum(x) / n, sum(y) / n) if n else (0.0, 0.0)
    sxx = sum((a - mx) ** 2 for a in x)
    if n < 2 or sxx == 0:
        raise ValueError("a line needs at least two distinct x values")
    slope = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx
    intercept = my - slope * mx
    ss_tot = sum((b - my) ** 2 for b in y)
    ss_res = sum((b - intercept - slope * a) ** 2 for a, b in zip(x, y))
    return {"slope": slope, "intercept": intercept, "r2": None if ss_tot == 0 else 1.0 - ss_res / ss_tot, "n": n}
