"""Claims about methods, measured over seeds: mean with a 95% interval and a verdict.

A claim "A >= B" gets, from each method's per-seed accuracies (the same held-out episodes for every
seed and method):

- **holds** — A's 95% interval lies above B's, or both are the same number at every seed (a tie
  is ">=");
- **does not hold** — A's interval lies below B's;
- **inconclusive** — the intervals overlap.

The interval is Student's t over the seeds (n - 1 degrees of freedom).  No model code here.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

# two-sided 95% quantiles of Student's t, by degrees of freedom (scipy.stats.t.ppf(0.975, df))
T975 = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305, 4: 2.776445105, 5: 2.570581836, 6: 2.446911851,
        7: 2.364624252, 8: 2.306004135, 9: 2.262157163, 10: 2.228138852}
VERDICTS = ("holds", "does not hold", "inconclusive")


@dataclass(frozen=True)
class SeedSummary:
    mean: float
    lo: float
    hi: float
    n: int
    values: tuple[float, ...]

    def as_dict(self) -> dict:
        return {"mean": round(self.mean, 4), "ci95": [round(self.lo, 4), round(self.hi, 4)], "seeds": self.n,
                "values": [round(v, 4) for v in self.values]}


def summarize_seeds(values: Sequence[float], bounds: tuple[float, float] | None = None) -> SeedSummary:
    """Mean and 95% t-interval of per-seed values (one value: the interval is that point).  ``bounds``:
    the range the quantity cannot leave (an accuracy: (0, 1)); the interval is cut to it, so three seeds
    at 1.000, 1.000, 0.997 read [0.993, 1.000], not [0.993, 1.004]."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("no values to summarise")
    n = len(xs)
    mean = sum(xs) / n
    if n == 1:
        return SeedSummary(mean, mean, mean, 1, tuple(xs))
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    t = T975.get(n - 1, 1.959964)
    half = t * sd / math.sqrt(n)
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return SeedSummary(mean, lo, hi, n, tuple(xs))


def verdict_ge(a: SeedSummary, b: SeedSummary, tie: float = 1e-9) -> str:
    """The verdict on "a >= b" (see the module docstring)."""
    if a.n == b.n and all(abs(x - y) <= tie for x, y in zip(a.values, b.values)):
        return "holds"  # the same result at every seed: a tie satisfies >=
    if max(a.values + b.values) - min(a.values + b.values) <= tie:
        return "holds"  # one value everywhere (e.g. every seed at 1.000 against a training-free 1.000)
    if a.lo > b.hi:
        return "holds"
    if a.hi < b.lo:
        return "does not hold"
    return "inconclusive"


def chain_verdict(summaries: Sequence[SeedSummary]) -> str:
    """The verdict on s0 >= s1 >= s2 >= ...: holds only if every link holds; does not hold if any link
    does not; else inconclusive."""
    links = [verdict_ge(a, b) for a, b in zip(summaries, summaries[1:])]
    if all(v == "holds" for v in links):
        return "holds"
    if any(v == "does not hold" for v in links):
        return "does not hold"
    return "inconclusive"


def wilson_interval(correct: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``correct / n`` (``correct`` may be a fractional
    count, e.g. n * accuracy)."""
    if n <= 0:
        raise ValueError(f"n must be >= 1, got {n}")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at p = 0 or 1 one bound is exactly p (the score equation's root); rounding must not move it
    lo = 0.0 if p <= 0 else max(0.0, centre - half)
    hi = 1.0 if p >= 1 else min(1.0, centre + half)
    return lo, hi


CLAIMS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "claims"  # the committed per-run JSON


def seed_accuracies(stem: str, folder: str | Path | None = None, shots: int | None = None) -> list[float]:
    """The held-out accuracy of each seed's run ``{stem}.seed*.json`` under ``folder`` (default: the
    committed claim runs, e.g. ``seed_accuracies("downstream/ft-vqa.mmict")``), in seed order.  A run
    with several shot counts (``results``: ICL) gives the one at ``shots`` (default: its first)."""
    base = Path(folder) if folder is not None else CLAIMS_DIR
    stem_path = base / stem
    paths = sorted(stem_path.parent.glob(f"{stem_path.name}.seed*.json"),
                   key=lambda p: int(p.name.rsplit(".seed", 1)[1].split(".")[0]))
    if not paths:
        raise FileNotFoundError(f"no claim runs {stem}.seed*.json under {base}; run the claim script first")
    out = []
    for p in paths:
        rec = json.loads(p.read_text())
        if "results" in rec:
            rows = [r for r in rec["results"] if shots is None or r["shots"] == shots]
            if not rows:
                raise ValueError(f"{p.name} has no result at {shots} shots")
            out.append(float(rows[0]["accuracy"]))
        else:
            out.append(float(rec["accuracy"]))
    return out


def write_marked_block(readme, begin: str, end: str, body: str, check: bool = False) -> bool:
    """Put ``body`` between the marker lines ``begin`` and ``end`` of the file ``readme`` (a claim
    table generated from its JSON).  ``check``: write nothing, return whether it is already there."""
    from pathlib import Path

    path = Path(readme)
    text = path.read_text()
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(end) < text.index(begin):
        raise ValueError(f"{path.name} must hold exactly one block between {begin!r} and {end!r}")
    i, j = text.index(begin) + len(begin), text.index(end)
    new = text[:i] + "\n" + body + "\n" + text[j:]
    if check:
        return new == text
    path.write_text(new)
    return True

