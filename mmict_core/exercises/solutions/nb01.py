"""Worked solutions of notebook 01's exercises (see mmict_core.exercises.solutions)."""
from __future__ import annotations


def wilson(correct, n):
    import math

    z = 1.959964  # the two-sided 95% normal quantile
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if p == 0 else centre - half
    hi = 1.0 if p == 1 else centre + half
    return lo, hi
