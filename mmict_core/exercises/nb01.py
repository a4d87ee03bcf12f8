"""Exercises of notebook 01 (in-context learning).  Each checks against the library function the
notebook's text explains; the worked solution is a plain implementation from the formula, so the
check tests it too."""
from __future__ import annotations

import math
import random

from .core import Exercise, exercise
from .solutions import nb01 as solutions


def _wilson_ref(correct: float, n: int) -> tuple[float, float]:
    from ..evaluate.claims import wilson_interval

    return wilson_interval(correct, n)


def _wilson_cases(rng: random.Random):
    fixed = [((0, 50), {}), ((50, 50), {}), ((25, 50), {}), ((1, 1), {}), ((196, 200), {})]
    return fixed + [((k, n), {}) for n in (rng.randint(5, 400) for _ in range(6)) for k in [rng.randint(0, n)]]


def _wilson_normal(correct, n):  # the textbook normal interval: too narrow near 0 and 1, can leave [0, 1]
    p, z = correct / n, 1.959964
    h = z * math.sqrt(p * (1 - p) / n)
    return p - h, p + h


exercise(Exercise(
    key="01.wilson", title="01 · the 95% Wilson interval of an accuracy", reference=_wilson_ref,
    cases=_wilson_cases, solution=solutions.wilson,
    hints=("the Wilson interval solves |p - p_hat| = z * sqrt(p(1-p)/n) for p: centre "
           "(p_hat + z²/2n) / (1 + z²/n), half-width z*sqrt(p_hat(1-p_hat)/n + z²/4n²) / (1 + z²/n), z = 1.959964",
           "at 0 correct the lower end is exactly 0, at n correct the upper end is exactly 1"),
    wrong=(_wilson_normal,)))
