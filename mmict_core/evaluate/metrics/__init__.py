"""Evaluation metrics, one per module, in pure Python (no model imports):

``vqa_accuracy``  the official VQA accuracy (VQAv2, OK-VQA), ``vqa_version`` "2017" (default) or
                  "head" of the official script; answers normalised by ``..normalize`` (the one
                  normaliser, also used by exact match);
``bleu``          BLEU-n (coco-caption), ``rouge`` ROUGE-L, ``cider`` CIDEr-D;
``official``      coco-caption's pipeline: the Java PTBTokenizer + pycocoevalcap's scorers;
``tokenizer``     a pure-Python re-creation of that Java tokenizer.

The caption metrics run the official pipeline when Java and pycocoevalcap are here, and the
built-in tokenizer and scorers otherwise (``backend=`` chooses; results say which ran).
"""
from __future__ import annotations

from typing import Sequence

from . import official
from ._common import BACKENDS, CaptionScore
from .bleu import bleu
from .cider import CiderD, cider_d
from .rouge import rouge_l
from .tokenizer import ptb_tokenize
from .vqa_accuracy import (DEFAULT_VQA_VERSION, VQA_VERSIONS, mean_vqa_accuracy, normalize_prediction, vqa_accuracy,
                           vqa_report)

METRICS = ("vqa_accuracy", "accuracy", "bleu", "rouge", "cider")


def score(metric: str, predictions: Sequence[str], references: Sequence[Sequence[str]], *,
          df_references: Sequence[Sequence[str]] | None = None, backend: str = "auto",
          vqa_version: str = DEFAULT_VQA_VERSION) -> float:
    """One number for ``predictions`` under ``metric`` (a task's ``metric`` attribute): ``vqa_accuracy``
    (official, in [0, 1], ``vqa_version`` "2017" or "head"), ``accuracy`` (exact match after the
    official VQA normalisation), ``bleu`` (BLEU-4), ``rouge`` (ROUGE-L) or ``cider`` (CIDEr-D;
    ``df_references``: the whole split's references).  ``backend``: see :mod:`._common`."""
    if metric == "vqa_accuracy":
        return mean_vqa_accuracy(predictions, references, vqa_version=vqa_version)
    if metric == "accuracy":
        from ..exact_match import exact_match

        if len(predictions) != len(references) or not predictions:
            raise ValueError(f"{len(predictions)} predictions for {len(references)} reference lists")
        return sum(exact_match(p, r) for p, r in zip(predictions, references)) / len(predictions)
    if metric == "bleu":
        return bleu(predictions, references, backend=backend).score
    if metric == "rouge":
        return rouge_l(predictions, references, backend=backend).score
    if metric == "cider":
        return cider_d(predictions, references, df_references=df_references, backend=backend).score
    raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")


__all__ = ["official", "BACKENDS", "CaptionScore", "METRICS", "bleu", "CiderD", "cider_d", "rouge_l", "ptb_tokenize",
           "mean_vqa_accuracy", "normalize_prediction", "score", "vqa_accuracy", "vqa_report", "VQA_VERSIONS",
           "DEFAULT_VQA_VERSION"]
