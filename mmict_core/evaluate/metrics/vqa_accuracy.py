"""The standard VQA accuracy (VQA v1/v2, OK-VQA), as the official evaluation script computes it, in
either of its two versions (``vqa_version``):

``"2017"`` (default) -- ``vqaEval.py`` as of GT-Vision-Lab/VQA commit 458a8b2 (Oct 2016), the script
  of the VQA v2 release and challenges from 2017 (used by LAVIS/BLIP-2 and most VQA v2 tables):
  the prediction is always normalised (:func:`~mmict_core.evaluate.normalize.normalize_answer`);
  the human answers get :func:`process_punctuation` only, and only when they are not all identical.
``"head"`` -- the current ``vqaEval.py`` (commit a013f00, Mar 2021; used by OpenFlamingo): every
  answer is stripped; when the (stripped) human answers are not all identical, the human answers
  *and* the prediction get punctuation and digit/article handling; when all ten agree, neither is
  normalised (a prediction "Two" then scores 0 against ten "2").

For each human answer *i*: acc_i = min(1, #(other answers equal to the prediction) / 3); the
question's accuracy is the mean of the acc_i -- so 1 of 10 humans agreeing gives 0.3, 2 give 0.6,
3 give 0.9 and 4 or more 1.0.  The dataset score is the mean over questions (the official script
reports it x 100).  Both versions are checked against the official scripts on stress cases
(``tests/fixtures/vqa_official.json``).  Reference: Antol et al., "VQA: Visual Question Answering",
ICCV 2015.  Imports no model code.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Sequence

from ..normalize import normalize_answer, process_digit_article, process_punctuation

VQA_VERSIONS = ("2017", "head")
DEFAULT_VQA_VERSION = "2017"
VQA_VERSION_SOURCE = {"2017": "GT-Vision-Lab/VQA vqaEval.py @ 458a8b2 (2016-10, the VQA v2 / 2017 script)",
                      "head": "GT-Vision-Lab/VQA vqaEval.py @ a013f00 (2021-03, current HEAD)"}
normalize_prediction = normalize_answer  # the name this module used before; one normaliser


def _check_version(vqa_version: str) -> str:
    if vqa_version not in VQA_VERSIONS:
        raise ValueError(f"unknown vqa_version {vqa_version!r}; use '2017' (the VQA v2 script, default) "
                         "or 'head' (the current official script)")
    return vqa_version


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def vqa_accuracy(prediction: str, answers: Sequence[str], vqa_version: str = DEFAULT_VQA_VERSION) -> float:
    """Accuracy in [0, 1] of ``prediction`` against the human ``answers`` of one question."""
    _check_version(vqa_version)
    answers = list(answers)
    if not answers:
        raise ValueError("VQA accuracy needs the human answers of the question; got none")
    if vqa_version == "2017":
        pred = normalize_answer(prediction)
        if len(set(answers)) > 1:
            answers = [process_punctuation(a) for a in answers]
    else:
        answers, pred = [_clean(a) for a in answers], _clean(prediction)
        if len(set(answers)) > 1:
            answers = [process_digit_article(process_punctuation(a)) for a in answers]
            pred = process_digit_article(process_punctuation(pred))
    matches = [a == pred for a in answers]
    total = sum(matches)
    # leave-one-out: answer i removed, count the matches among the others
    return sum(min(1.0, (total - m) / 3.0) for m in matches) / len(answers)


def mean_vqa_accuracy(predictions: Sequence[str], answers: Sequence[Sequence[str]],
                      vqa_version: str = DEFAULT_VQA_VERSION) -> float:
    """Mean accuracy in [0, 1] over questions (the official 'overall' is this x 100)."""
    return vqa_report(predictions, answers, vqa_version=vqa_version)["overall"]


def vqa_report(predictions: Sequence[str], answers: Sequence[Sequence[str]],
               groups: Sequence[Hashable] | None = None, vqa_version: str = DEFAULT_VQA_VERSION) -> dict:
    """``{"overall": mean, "per_item": [...], "by_group": {group: mean}, "vqa_version": ...,
    "source": ...}`` (scores in [0, 1]); ``groups`` is e.g. each question's ``answer_type``
    ("yes/no", "number", "other")."""
    _check_version(vqa_version)
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answer lists; give one per question")
    if not predictions:
        raise ValueError("no predictions to score")
    per_item = [vqa_accuracy(p, a, vqa_version) for p, a in zip(predictions, answers)]
    by_group: dict = defaultdict(list)
    if groups is not None:
        if len(groups) != len(per_item):
            raise ValueError(f"{len(groups)} groups for {len(per_item)} questions")
        for g, acc in zip(groups, per_item):
            by_group[g].append(acc)
    return {"overall": sum(per_item) / len(per_item), "per_item": per_item,
            "by_group": {g: sum(v) / len(v) for g, v in by_group.items()},
            "vqa_version": vqa_version, "source": VQA_VERSION_SOURCE[vqa_version]}
