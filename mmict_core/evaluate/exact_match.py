"""Exact-match accuracy after VQA-style normalisation.  Imports no model code."""
from __future__ import annotations

from typing import Sequence

from .normalize import normalize_answer


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised reference, else 0.0."""
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(r) for r in references))
