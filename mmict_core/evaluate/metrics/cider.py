"""CIDEr-D (Vedantam et al., "CIDEr: Consensus-based Image Description Evaluation", CVPR 2015), as
coco-caption's ``Cider`` scorer computes it.

For n = 1..4, each sentence becomes a vector g_n of TF-IDF weights over its n-grams,
    g_n(w) = count(w) * (log(N) - log(max(1, df(w)))),
where df(w) is the number of *documents* (images: the set of all their references) containing the
n-gram w and N the number of documents.  For a candidate c and references s_1..s_m:
    CIDEr-D = 10 * (1/4) * sum_n (1/m) * sum_j  exp(-(l_c - l_j)^2 / (2 * 6^2)) *
              sum_w min(g_n^c(w), g_n^j(w)) * g_n^j(w) / (|g_n^c| |g_n^j|)
(the "-D" parts: candidate weights clipped by the reference's, a Gaussian length penalty; l is
counted as coco-caption does, as the number of bigrams, i.e. words - 1).

The document frequencies come from a *reference corpus*: by default the references of the items
scored (as coco-caption does, so score a whole split at once); :class:`CiderD` fixes them once from a
whole split so that one item or a few can be scored stably.  No model code.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Hashable, Mapping, Sequence

from ._common import CaptionScore, as_coco, prepare, resolve_backend
from .tokenizer import ptb_tokenize

N_MAX, SIGMA = 4, 6.0


def _counts(sentence: str, n: int = N_MAX) -> Counter:
    words = sentence.split()
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


class CiderD:
    """CIDEr-D with document frequencies fixed from ``reference_corpus`` (one list of reference
    captions per image of the whole split)."""

    def __init__(self, reference_corpus: Sequence[Sequence[str]], *, tokenize: bool = True,
                 n: int = N_MAX, sigma: float = SIGMA):
        if not reference_corpus:
            raise ValueError("CIDEr-D needs a reference corpus of at least one image")
        self.n, self.sigma, self.tokenize = n, sigma, tokenize
        self.df: Counter = Counter()
        for refs in reference_corpus:
            refs = [refs] if isinstance(refs, str) else refs
            self.df.update({g for r in refs for g in _counts(self._tok(r), n)})
        self.log_n_docs = math.log(len(reference_corpus))

    def _tok(self, text: str) -> str:
        return ptb_tokenize(text) if self.tokenize else text

    def _vector(self, counts: Counter) -> tuple[list[dict], list[float]]:
        vec: list[dict] = [{} for _ in range(self.n)]
        for g, tf in counts.items():
            vec[len(g) - 1][g] = tf * (self.log_n_docs - math.log(max(1.0, self.df[g])))
        return vec, [math.sqrt(sum(w * w for w in v.values())) for v in vec]

    def score_tokenized(self, candidate: str, references: Sequence[str]) -> float:
        """CIDEr-D of one already tokenised candidate against its tokenised references."""
        c_vec, c_norm = self._vector(_counts(candidate, self.n))
        c_len = max(0, len(candidate.split()) - 1)
        total = [0.0] * self.n
        for ref in references:
            r_vec, r_norm = self._vector(_counts(ref, self.n))
            penalty = math.exp(-((c_len - max(0, len(ref.split()) - 1)) ** 2) / (2 * self.sigma ** 2))
            for k in range(self.n):
                dot = sum(min(w, r_vec[k].get(g, 0.0)) * r_vec[k].get(g, 0.0) for g, w in c_vec[k].items())
                if c_norm[k] != 0 and r_norm[k] != 0:
                    dot /= c_norm[k] * r_norm[k]
                total[k] += dot * penalty
        return 10.0 * sum(total) / self.n / len(references)

    def score(self, candidates: Sequence[str] | Mapping[Hashable, str],
              references: Sequence[Sequence[str]] | Mapping[Hashable, Sequence[str]]) -> CaptionScore:
        """Mean CIDEr-D (and per item) of ``candidates`` with this corpus's document frequencies."""
        cands, refs, tokenizer = prepare(candidates, references, self.tokenize)
        per_item = [self.score_tokenized(c, r) for c, r in zip(cands, refs)]
        return CaptionScore(sum(per_item) / len(per_item), per_item, "builtin",
                            {"n_documents": round(math.exp(self.log_n_docs))}, tokenizer)


def cider_d(candidates: Sequence[str] | Mapping[Hashable, str],
            references: Sequence[Sequence[str]] | Mapping[Hashable, Sequence[str]], *,
            df_references: Sequence[Sequence[str]] | None = None, tokenize: bool = True,
            backend: str = "auto") -> CaptionScore:
    """Mean CIDEr-D of ``candidates`` (the coco-caption "CIDEr", x 10 scale, so ~1.3 for a good model).

    Document frequencies come from ``references`` (score the whole split in one call) or, when given,
    from ``df_references`` (every reference list of the split; then only the built-in code can
    compute it).  See :func:`bleu` for ``tokenize`` and ``backend``."""
    if df_references is not None:
        if backend in ("official", "pycocoevalcap"):
            raise ValueError("pycocoevalcap's Cider takes document frequencies only from the scored items; "
                             "use backend='builtin' (or 'auto') with df_references")
        return CiderD(df_references, tokenize=tokenize).score(candidates, references)
    backend = resolve_backend(backend)
    cands, refs, tokenizer = prepare(candidates, references, tokenize, backend)
    if backend in ("official", "pycocoevalcap"):
        from pycocoevalcap.cider.cider import Cider

        score, per_item = Cider().compute_score(*as_coco(cands, refs))
        return CaptionScore(float(score), [float(x) for x in per_item], backend, tokenizer=tokenizer)
    result = CiderD(refs, tokenize=False).score(cands, refs)
    result.backend, result.tokenizer = backend, tokenizer
    return result
