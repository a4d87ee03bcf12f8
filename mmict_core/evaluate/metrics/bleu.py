"""BLEU-n as coco-caption computes it (Papineni et al., ACL 2002; pycocoevalcap ``Bleu(4)``).

Per item: clipped n-gram matches ``correct_k`` (each candidate n-gram counted at most as often as in
the reference where it is most frequent), ``guess_k`` = number of candidate n-grams, and the
reference length *closest* to the candidate's (ties: the shorter).  The corpus score sums the counts
over items first:

    BLEU-n = BP * (prod_{k<=n} (correct_k + 1e-15) / (guess_k + 1e-9)) ** (1/n),
    BP = exp(1 - r/c) when c < r else 1   (c, r: summed candidate / closest reference lengths).

``per_item`` applies the same formula to each item alone.  Imports no model code.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Hashable, Mapping, Sequence

from ._common import CaptionScore, as_coco, prepare, resolve_backend

TINY, SMALL = 1e-15, 1e-9  # coco-caption's guards: a zero count still gives (almost) zero, never 0/0


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def _stats(cand: str, refs: list[str], n: int) -> tuple[int, int, list[int], list[int]]:
    """(candidate length, closest reference length, correct_k, guess_k) of one item."""
    words = cand.split()
    c = len(words)
    max_ref: Counter = Counter()
    ref_lens = []
    for ref in refs:
        toks = ref.split()
        ref_lens.append(len(toks))
        for g, cnt in _ngrams(toks, n).items():
            max_ref[g] = max(max_ref[g], cnt)
    r = min(ref_lens, key=lambda length: (abs(length - c), length))
    correct = [0] * n
    for g, cnt in _ngrams(words, n).items():
        correct[len(g) - 1] += min(cnt, max_ref[g])
    return c, r, correct, [max(0, c - k) for k in range(n)]


def _bleus(c: float, r: float, correct: list[int], guess: list[int]) -> list[float]:
    """[BLEU-1, ..., BLEU-n] from (summed) counts."""
    out, prod = [], 1.0
    for k in range(len(correct)):
        prod *= (correct[k] + TINY) / (guess[k] + SMALL)
        out.append(prod ** (1.0 / (k + 1)))
    ratio = (c + TINY) / (r + SMALL)
    if ratio < 1:
        out = [b * math.exp(1 - 1 / ratio) for b in out]
    return out


def _builtin(cands: list[str], refs: list[list[str]], n: int) -> tuple[list[float], list[list[float]]]:
    stats = [_stats(c, r, n) for c, r in zip(cands, refs)]
    per_item = [_bleus(c, r, cor, gue) for c, r, cor, gue in stats]
    c_sum, r_sum = sum(s[0] for s in stats), sum(s[1] for s in stats)
    correct = [sum(s[2][k] for s in stats) for k in range(n)]
    guess = [sum(s[3][k] for s in stats) for k in range(n)]
    return _bleus(c_sum, r_sum, correct, guess), per_item


def _pycocoevalcap(cands: list[str], refs: list[list[str]], n: int) -> tuple[list[float], list[list[float]]]:
    from pycocoevalcap.bleu.bleu import Bleu

    corpus, per_order = Bleu(n).compute_score(*as_coco(cands, refs), verbose=0)
    return list(corpus), [list(x) for x in zip(*per_order)]


def bleu(candidates: Sequence[str] | Mapping[Hashable, str],
         references: Sequence[Sequence[str]] | Mapping[Hashable, Sequence[str]], *,
         n: int = 4, tokenize: bool = True, backend: str = "auto") -> CaptionScore:
    """Corpus BLEU-``n`` (default BLEU-4) of ``candidates`` against their ``references``.

    ``details["bleu_k"]`` holds BLEU-1..n.  ``tokenize=False`` when the texts are already tokenised
    (space-separated).  ``backend``: ``"auto"`` (``official`` when Java and pycocoevalcap are
    here), ``"official"`` (coco-caption's Java tokenizer + pycocoevalcap), ``"pycocoevalcap"`` or
    ``"builtin"`` (see :mod:`._common`); ``.backend`` and ``.tokenizer`` of the result say which ran."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    backend = resolve_backend(backend)
    cands, refs, tokenizer = prepare(candidates, references, tokenize, backend)
    corpus, per_item = (_builtin if backend == "builtin" else _pycocoevalcap)(cands, refs, n)
    return CaptionScore(float(corpus[-1]), [float(p[-1]) for p in per_item], backend,
                        {f"bleu_{k + 1}": float(b) for k, b in enumerate(corpus)}, tokenizer)
