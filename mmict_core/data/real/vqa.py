"""VQAv2 and OK-VQA from their official files (OK-VQA uses the VQA format).

Questions JSON: ``{"data_subtype": "val2014", "questions": [{"question_id", "image_id", "question"}]}``.
Annotations JSON: ``{"annotations": [{"question_id", "answers": [{"answer", ...} x 10],
"multiple_choice_answer", "question_type", "answer_type"}]}`` (optional: without it the queries are
unlabelled, as for test-dev).  Images: ``<image_dir>/COCO_<subtype>_<image_id:012d>.jpg`` (COCO 2014
names) or ``<image_dir>/<image_id:012d>.jpg`` (COCO 2017 names).

Each :class:`Example` keeps all human answers in ``answers`` (the official metric needs the ten), in
file order, so ``answer`` (the training target) is the first of them as in the MimIC/LIVE protocol;
``meta`` has ``question_id``, ``image_id``, ``question_type``, ``answer_type`` and
``multiple_choice_answer`` (also the ``label`` for class-balanced demo selection).
"""
from __future__ import annotations

import os

from .base import DatasetFormatError, LocalDataset, PathLike, Record, choose_subset, field_of, read_json, require_dir

VQA_LAYOUT = """  <root>/
    v2_OpenEnded_mscoco_<split>2014_questions.json   (OK-VQA: OpenEnded_mscoco_<split>2014_questions.json)
    v2_mscoco_<split>2014_annotations.json            (OK-VQA: mscoco_<split>2014_annotations.json)
    <split>2014/COCO_<split>2014_000000XXXXXX.jpg     (COCO images; or 000000XXXXXX.jpg)"""


def coco_image_path(image_dir: str, image_id: int, subtype: str) -> str:
    """The COCO image file of ``image_id``: the 2014 name when present, else the 2017 name."""
    name14 = os.path.join(image_dir, f"COCO_{subtype}_{int(image_id):012d}.jpg")
    name17 = os.path.join(image_dir, f"{int(image_id):012d}.jpg")
    return name17 if not os.path.isfile(name14) and os.path.isfile(name17) else name14


def load_vqa(questions: PathLike, annotations: PathLike | None, image_dir: PathLike, *,
             name: str = "vqav2", subset: int | None = None, seed: int | None = None,
             subtype: str | None = None) -> LocalDataset:
    """Read a VQA-format split.  ``subset``/``seed`` keep the first N questions or a seeded random N
    (e.g. ``subset=10000, seed=0``); a question file that already lists the papers' 10k subset works
    as ``questions`` directly (the annotations of the full split are looked up by ``question_id``)."""
    q_path = os.fspath(questions)
    qdata = read_json(q_path, f"{name} questions file", VQA_LAYOUT)
    qs = field_of(qdata, "questions", q_path, f"{name} questions file")
    if not isinstance(qs, list):
        raise DatasetFormatError(f"{name} questions file {q_path!r}: 'questions' must be a list")
    image_dir = require_dir(image_dir, f"{name} image folder", VQA_LAYOUT)
    subtype = subtype or qdata.get("data_subtype") or os.path.basename(os.path.normpath(image_dir))
    by_qid: dict = {}
    if annotations is not None:
        a_path = os.fspath(annotations)
        anns = field_of(read_json(a_path, f"{name} annotations file", VQA_LAYOUT), "annotations", a_path,
                        f"{name} annotations file")
        by_qid = {field_of(a, "question_id", a_path, f"{name} annotations file"): a for a in anns}
    records = []
    for i in choose_subset(len(qs), subset, seed):
        q = qs[i]
        qid = field_of(q, "question_id", q_path, f"{name} questions file")
        image_id = field_of(q, "image_id", q_path, f"{name} questions file")
        meta = {"question_id": qid, "image_id": image_id}
        answers: list[str] = []
        if annotations is not None:
            if qid not in by_qid:
                raise DatasetFormatError(f"{name}: question {qid} of {q_path!r} has no entry in the annotations "
                                         f"file {a_path!r}; do the two files belong to the same split?")
            ann = by_qid[qid]
            answers = [str(field_of(a, "answer", a_path, f"{name} annotations file"))
                       for a in field_of(ann, "answers", a_path, f"{name} annotations file")]
            mc = ann.get("multiple_choice_answer", answers[0] if answers else "")
            meta.update(multiple_choice_answer=mc, label=mc, question_type=ann.get("question_type", ""),
                        answer_type=ann.get("answer_type", ""))
        prompt = str(field_of(q, "question", q_path, f"{name} questions file"))
        records.append(Record([coco_image_path(image_dir, image_id, subtype)], prompt, answers, meta))
    return LocalDataset(name, records, layout=VQA_LAYOUT)

