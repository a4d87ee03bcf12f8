"""Evaluation metrics, one per module, in pure Python (no model imports):

``vqa_accuracy``  the official VQA accuracy (VQAv2, OK-VQA), with its answer normalisation;
``bleu``          BLEU-n (coco-caption), ``rouge`` ROUGE-L, ``cider`` CIDEr-D;
``tokenizer``     a pure-Python stand-in for coco-caption's (Java) PTB tokenizer.

The caption metrics run pycocoevalcap's own scorers when it is installed and identical built-in
re-implementations otherwise (``backend=`` chooses).
"""
from __future__ import annotations

from typing import Sequence

from ._common import BACKENDS, CaptionScore
from .bleu import bleu
from .cider import CiderD, cider_d
from .rouge import rouge_l
from .tokenizer import ptb_tokenize
from .vqa_accuracy import mean_vqa_accuracy, normalize_prediction, vqa_accuracy, vqa_report

METRICS = ("vqa_accuracy", "accuracy", "bleu", "rouge", "cider")


def score(metric: str, predictions: Sequence[str], references: Sequence[Sequence[str]], *,
          df_references: Sequence[Sequence[str]] | None = None) -> float:
    """One number for ``predictions`` under ``metric`` (a task's ``metric`` attribute): ``vqa_accuracy``
    (official, in [0, 1]), ``accuracy`` (exact match after VQA normalisation), ``bleu`` (BLEU-4),
    ``rouge`` (ROUGE-L) or ``cider`` (CIDEr-D; ``df_references``: the whole split's references)."""
    if metric == "vqa_accuracy":
        return mean_vqa_accuracy(predictions, references)
    if metric == "accuracy":
        from ..exact_match import exact_match

        if len(predictions) != len(references) or not predictions:
            raise ValueError(f"{len(predictions)} predictions for {len(references)} reference lists")
        return sum(exact_match(p, r) for p, r in zip(predictions, references)) / len(predictions)
    if metric == "bleu":
        return bleu(predictions, references).score
    if metric == "rouge":
        return rouge_l(predictions, references).score
    if metric == "cider":
        return cider_d(predictions, references, df_references=df_references).score
    raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")


__all__ = ["BACKENDS", "CaptionScore", "METRICS", "bleu", "CiderD", "cider_d", "rouge_l", "ptb_tokenize",
           "mean_vqa_accuracy", "normalize_prediction", "score", "vqa_accuracy", "vqa_report"]
