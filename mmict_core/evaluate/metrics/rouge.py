"""ROUGE-L as coco-caption computes it (Lin, "ROUGE", ACL workshop 2004; pycocoevalcap ``Rouge``).

Per item, with LCS the longest common subsequence of tokens:
    P = max over references of LCS / len(candidate),  R = max over references of LCS / len(reference),
    ROUGE-L = (1 + b^2) P R / (R + b^2 P) with b = 1.2   (0 when P or R is 0).
P and R are maximised separately, as coco-caption does.  The corpus score is the mean over items.
Tokens are split on single spaces (an empty caption counts as one empty token).  No model code.
"""
from __future__ import annotations

from typing import Hashable, Mapping, Sequence

from ._common import CaptionScore, as_coco, prepare, resolve_backend

BETA = 1.2


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (dynamic programming)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_item(candidate: str, references: Sequence[str], beta: float = BETA) -> float:
    """ROUGE-L of one tokenised candidate against its tokenised references."""
    cand = candidate.split(" ")
    precision, recall = 0.0, 0.0
    for ref in references:
        toks = ref.split(" ")
        lcs = lcs_length(toks, cand)
        precision, recall = max(precision, lcs / len(cand)), max(recall, lcs / len(toks))
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + beta ** 2) * precision * recall / (recall + beta ** 2 * precision)


def rouge_l(candidates: Sequence[str] | Mapping[Hashable, str],
            references: Sequence[Sequence[str]] | Mapping[Hashable, Sequence[str]], *,
            tokenize: bool = True, backend: str = "auto") -> CaptionScore:
    """Mean ROUGE-L of ``candidates`` against their ``references`` (see :func:`bleu` for the options)."""
    backend = resolve_backend(backend)
    cands, refs, tokenizer = prepare(candidates, references, tokenize, backend)
    if backend in ("official", "pycocoevalcap"):
        from pycocoevalcap.rouge.rouge import Rouge

        score, per_item = Rouge().compute_score(*as_coco(cands, refs))
        per_item = [float(x) for x in per_item]
    else:
        per_item = [rouge_l_item(c, r) for c, r in zip(cands, refs)]
        score = sum(per_item) / len(per_item)
    return CaptionScore(float(score), per_item, backend, tokenizer=tokenizer)
