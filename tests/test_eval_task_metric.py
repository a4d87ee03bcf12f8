"""evaluate_generation scores by the task's metric: VQA accuracy per question over its ten answers,
CIDEr-D over the run with document frequencies from the whole reference split, BLEU-4; exact match
for the synthetic tasks (unchanged).  Tiny fixture datasets, a stub generate with known answers,
numbers checked against hand computations."""
from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from mmict_core.data import make_episode
from mmict_core.data.real import local_task
from mmict_core.evaluate.exact_match import exact_match
from mmict_core.evaluate.icl import PAPER_CUTS, ShotResult, evaluate_generation


def jpeg(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (8, 8), (value, 40, 40)).save(path)


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(obj, fh)


def vqa_fixture(root, answers_per_question):
    """A VQAv2-format folder: two train questions, and one val question per answer list."""
    for split, lists in (("train", [["yes"] * 10, ["no"] * 10]), ("val", answers_per_question)):
        qs, anns = [], []
        for j, answers in enumerate(lists):
            qid, image_id = (1 if split == "train" else 100) + j, (10 if split == "train" else 200) + j
            qs.append({"image_id": image_id, "question": f"what is {j}?", "question_id": qid})
            anns.append({"question_id": qid, "image_id": image_id, "answers": [{"answer": a} for a in answers]})
            jpeg(os.path.join(root, f"{split}2014", f"COCO_{split}2014_{image_id:012d}.jpg"), 10 * j)
        write_json(os.path.join(root, f"v2_OpenEnded_mscoco_{split}2014_questions.json"), {"questions": qs})
        write_json(os.path.join(root, f"v2_mscoco_{split}2014_annotations.json"), {"annotations": anns})
    return local_task("vqav2", root=root)


def karpathy_fixture(root, val_captions):
    """A Karpathy-split folder: two train images, and one val image per reference list."""
    images = []
    for i, (split, caps) in enumerate([("train", ["a train image"]), ("train", ["another one"])] +
                                      [("val", c) for c in val_captions]):
        name = f"COCO_val2014_{i:012d}.jpg"
        jpeg(os.path.join(root, "val2014", name), 20 * i)
        images.append({"filepath": "val2014", "filename": name, "split": split, "cocoid": i,
                       "sentences": [{"raw": c} for c in caps]})
    write_json(os.path.join(root, "dataset_coco.json"), {"images": images})
    return local_task("coco-caption", root=root)


def stub(answers):
    """A generate function answering query i (in evaluation order) with ``answers[i]``; records its kwargs."""
    calls = []

    def generate(episodes, **kwargs):
        calls.append(kwargs)
        out = [answers[len(generate.seen) + i] for i in range(len(episodes))]
        generate.seen.extend(out)
        return out

    generate.seen, generate.calls = [], calls
    return generate


def test_vqa_accuracy_per_question_over_its_ten_answers(tmp_path):
    task = vqa_fixture(str(tmp_path / "vqav2"), [
        ["cat"] * 3 + ["dog"] * 7,  # "cat": 3 humans; leave-one-out: 3 subsets of 2 matches (2/3), 7 of 3 (1)
        ["2"] + ["3"] * 9,  # "two" -> "2": 1 human; 9 subsets of 1 match (1/3), 1 of 0
        ["dog"] * 10,  # "The dog." -> "dog": every subset >= 3 matches
    ])
    gen = stub(["cat", "two", "The dog."])
    (res,) = evaluate_generation(gen, task, [0], episodes=3, batch_size=2, progress=False, keep_predictions=3)
    q0 = (3 * (2 / 3) + 7 * 1.0) / 10  # 0.9
    q1 = (9 * (1 / 3) + 1 * 0.0) / 10  # 0.3
    q2 = 1.0
    assert isinstance(res, ShotResult) and res.metric == "vqa_accuracy" and res.n == 3
    assert res.accuracy == pytest.approx((q0 + q1 + q2) / 3, abs=1e-12)  # 0.7333...
    assert [p for p, _ in res.predictions] == ["cat", "two", "The dog."]
    assert gen.calls[0] == {"max_new_tokens": task.max_new_tokens}
    # exact match against any human answer would give every prediction 1.0: the metric really is VQA accuracy
    refs = list((["cat"] * 3 + ["dog"] * 7, ["2"] + ["3"] * 9, ["dog"] * 10))
    assert [exact_match(p, r) for p, r in zip(["cat", "two", "The dog."], refs)] == [1.0, 1.0, 1.0]


def test_cider_uses_the_whole_reference_split_for_document_frequencies(tmp_path):
    # three val images; "cat" is in the references of 2 of them.  Scoring the first two alone would
    # give df(cat) = 2 = N documents, idf 0 and CIDEr-D 0; over the split N = 3, idf = log(3/2) > 0.
    task = karpathy_fixture(str(tmp_path / "coco"), [["cat"], ["cat"], ["dog"]])
    gen = stub(["cat", "cat"])
    (res,) = evaluate_generation(gen, task, [0], episodes=2, progress=False)
    # one-word captions: only unigrams; candidate == reference -> cosine 1, no length penalty:
    # CIDEr-D = 10 * (1/4) * 1 = 2.5 for each item
    assert res.metric == "cider" and res.accuracy == pytest.approx(2.5, abs=1e-12)
    from mmict_core.evaluate.metrics import cider_d

    assert cider_d(["cat", "cat"], [["cat"], ["cat"]], backend="builtin").score == pytest.approx(0.0)


def test_corpus_bleu_and_decoding_options_and_answer_cuts(tmp_path):
    task = karpathy_fixture(str(tmp_path / "coco"), [["a red circle on the left"], ["a blue square at the top"]])
    task.metric = "bleu"
    gen = stub(["a red circle on the left\nQuestion: what", "A blue square at the top. Short answer"])
    (res,) = evaluate_generation(gen, task, [0], episodes=2, progress=False, max_new_tokens=30,
                                 generate_kwargs={"num_beams": 3}, cut_at=PAPER_CUTS, keep_predictions=2)
    assert res.metric == "bleu" and res.accuracy == pytest.approx(1.0, abs=1e-6)  # both exact after the cuts
    assert [p for p, _ in res.predictions] == ["a red circle on the left", "A blue square at the top."]
    assert gen.calls[0] == {"max_new_tokens": 30, "num_beams": 3}
    (wrong,) = evaluate_generation(stub(["green", "green"]), task, [0], episodes=2, progress=False)
    assert wrong.accuracy < 1e-6


def test_synthetic_tasks_keep_exact_match():
    eps = [make_episode("shapes-vqa", 0, seed=0, index=i, split="test") for i in range(6)]
    answers = [ep.query.answer if i % 3 else "wrong" for i, ep in enumerate(eps)]  # 4 of 6 right
    (res,) = evaluate_generation(stub(answers), "shapes-vqa", [0], episodes=6, progress=False)
    assert res.metric == "exact_match" and res.accuracy == pytest.approx(4 / 6, abs=1e-12)


def test_unknown_task_metric_is_refused(tmp_path):
    task = karpathy_fixture(str(tmp_path / "coco"), [["cat"]])
    task.metric = "meteor"
    with pytest.raises(ValueError, match="unknown metric 'meteor'"):
        evaluate_generation(stub(["cat"]), task, [0], episodes=1, progress=False)
