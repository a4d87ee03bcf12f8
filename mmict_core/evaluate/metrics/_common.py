"""Shared plumbing of the caption metrics: input checking, tokenisation, the result type and the
choice of backend:

``official``       coco-caption's pipeline: the Java PTBTokenizer + pycocoevalcap's scorers (needs Java
                   and pycocoevalcap; :mod:`.official`);
``pycocoevalcap``  pycocoevalcap's scorers on the built-in tokenizer's tokens;
``builtin``        the built-in tokenizer and scorers (pure Python);
``auto``           the first of these that can run here.

The scorers give the same numbers given the same tokens; the built-in tokenizer matches Java's on
all 7,000 fixture captions (see :mod:`.tokenizer` for what it can still miss)."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Hashable, Mapping, Sequence

from .tokenizer import ptb_tokenize

from . import official

BACKENDS = ("auto", "official", "pycocoevalcap", "builtin")
BUILTIN_TOKENIZER = "builtin-ptb (pure-Python re-creation of the CoreNLP 3.4.1 PTBTokenizer)"


@dataclass
class CaptionScore:
    """A corpus score, the score of every item (in input order), and which code computed it."""

    score: float
    per_item: list[float]
    backend: str
    details: dict[str, Any] = field(default_factory=dict)
    tokenizer: str = BUILTIN_TOKENIZER  # which tokenizer made the tokens ("none" when given tokenised)


def prepare(candidates: Sequence[str] | Mapping[Hashable, str],
            references: Sequence[Sequence[str]] | Mapping[Hashable, Sequence[str]],
            tokenize: bool = True, backend: str = "builtin") -> tuple[list[str], list[list[str]], str]:
    """Aligned (candidates, references) lists and the tokenizer's name; tokenised when asked, by
    the Java PTBTokenizer for the (resolved) ``official`` backend, else by :func:`ptb_tokenize`.

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
        cands.append(c)
        refs.append(r)
    if not tokenize:
        return cands, refs, "none"
    if backend == "official":  # as coco-caption: all references in one Java call, candidates in another
        flat = official.java_tokenize([x for r in refs for x in r])
        it = iter(flat)
        return official.java_tokenize(cands), [[next(it) for _ in r] for r in refs], official.TOKENIZER_NAME
    return [ptb_tokenize(c) for c in cands], [[ptb_tokenize(x) for x in r] for r in refs], BUILTIN_TOKENIZER


def have_pycocoevalcap() -> bool:
    try:
        return importlib.util.find_spec("pycocoevalcap") is not None
    except (ImportError, ValueError):  # a broken or blocked install
        return False


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "auto":
        if official.available():
            return "official"
        return "pycocoevalcap" if have_pycocoevalcap() else "builtin"
    if backend == "official":
        official.require()
    if backend == "pycocoevalcap" and not have_pycocoevalcap():
        raise ImportError("backend 'pycocoevalcap' needs the package: pip install 'pycocoevalcap>=1.2' "
                          "(or pip install 'mmict-studio[metrics]'); backend 'builtin' gives the same numbers")
    return backend


def as_coco(cands: list[str], refs: list[list[str]]) -> tuple[dict, dict]:
    """The ``(gts, res)`` dicts that pycocoevalcap's scorers take."""
    return {i: r for i, r in enumerate(refs)}, {i: [c] for i, c in enumerate(cands)}
