"""Shared plumbing of the caption metrics: input checking, tokenisation, the result type and the
choice between pycocoevalcap's scorers and the built-in re-implementations (same numbers)."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Hashable, Mapping, Sequence

from .tokenizer import ptb_tokenize

BACKENDS = ("auto", "pycocoevalcap", "builtin")


@dataclass
class CaptionScore:
    """A corpus score, the score of every item (in input order), and which code computed it."""

    score: float
    per_item: list[float]
    backend: str
    details: dict[str, Any] = field(default_factory=dict)


def prepare(candidates: Sequence[str] | Mapping[Hashable, str],
            references: Sequence[Sequence[str]] | Mapping[Hashable, Sequence[str]],
            tokenize: bool = True) -> tuple[list[str], list[list[str]]]:
    """Aligned (candidates, references) lists, tokenised with :func:`ptb_tokenize` when asked.

    Either two sequences (one candidate and one list of references per item) or two mappings with
    the same keys (e.g. image ids)."""
    if isinstance(candidates, Mapping) or isinstance(references, Mapping):
        if not (isinstance(candidates, Mapping) and isinstance(references, Mapping)):
            raise TypeError("give candidates and references both as sequences or both as mappings")
        if set(candidates) != set(references):
            missing = sorted(map(str, set(candidates) ^ set(references)))[:5]
            raise ValueError(f"candidates and references have different keys (e.g. {', '.join(missing)})")
        keys = list(candidates)
        candidates, references = [candidates[k] for k in keys], [references[k] for k in keys]
    if isinstance(candidates, str):
        raise TypeError("candidates must be a sequence of strings, one per item, not one string")
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists; give one per item")
    if not candidates:
        raise ValueError("no captions to score")
    cands, refs = [], []
    for i, (c, r) in enumerate(zip(candidates, references)):
        if not isinstance(c, str):
            raise TypeError(f"candidate {i} is {type(c).__name__}, not a string")
        r = [r] if isinstance(r, str) else list(r)
        if not r or not all(isinstance(x, str) for x in r):
            raise ValueError(f"item {i} needs at least one reference caption (strings); got {r!r}")
        cands.append(ptb_tokenize(c) if tokenize else c)
        refs.append([ptb_tokenize(x) if tokenize else x for x in r])
    return cands, refs


def have_pycocoevalcap() -> bool:
    try:
        return importlib.util.find_spec("pycocoevalcap") is not None
    except (ImportError, ValueError):  # a broken or blocked install
        return False


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "pycocoevalcap" if have_pycocoevalcap() else "builtin"
    if backend == "pycocoevalcap" and not have_pycocoevalcap():
        raise ImportError("backend 'pycocoevalcap' needs the package: pip install 'pycocoevalcap>=1.2' "
                          "(or pip install 'mmict-studio[metrics]'); backend 'builtin' gives the same numbers")
    return backend


def as_coco(cands: list[str], refs: list[list[str]]) -> tuple[dict, dict]:
    """The ``(gts, res)`` dicts that pycocoevalcap's scorers take."""
    return {i: r for i, r in enumerate(refs)}, {i: [c] for i, c in enumerate(cands)}
