"""The metrics against the official implementations, on fixtures the official code produced:

* ``tests/fixtures/vqa_official.json`` -- 10,000 VQA stress cases scored by GT-Vision-Lab/VQA's
  ``vqaEval.py`` at 458a8b2 ("2017") and a013f00 ("head"), and answer strings normalised by it
  (``scripts/metric_fixtures_vqa.py``);
* ``tests/fixtures/captions_official.json`` -- 1,000 COCO val2014 items (7,000 real captions) with
  the tokens and BLEU/ROUGE-L/CIDEr-D of coco-caption's pipeline, pycocoevalcap 1.2 with its Java
  PTBTokenizer (``scripts/metric_fixtures_captions.py``).

The tests marked ``official`` run Java and pycocoevalcap; without them they are skipped, except
under CI (env ``CI`` set), where that is a failure: CI installs both (.ci/run, the ``test`` extra).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mmict_core.evaluate.exact_match import exact_match
from mmict_core.evaluate.metrics import bleu, cider_d, official, ptb_tokenize, rouge_l, vqa_accuracy
from mmict_core.evaluate.normalize import normalize_answer

FIXTURES = Path(__file__).parent / "fixtures"


def _require_official():
    lacks = official.missing()
    if lacks:
        msg = "the official caption pipeline needs " + " and ".join(lacks)
        if os.environ.get("CI"):
            pytest.fail(msg + " -- CI must run the cross-checks")
        pytest.skip(msg)


@pytest.fixture(scope="module")
def vqa_fx():
    return json.loads((FIXTURES / "vqa_official.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def cap_fx():
    return json.loads((FIXTURES / "captions_official.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------------
# VQA


@pytest.mark.parametrize("version", ["2017", "head"])
def test_vqa_accuracy_equals_the_official_script(vqa_fx, version):
    strings, col = vqa_fx["strings"], {"2017": 2, "head": 3}[version]
    assert len(vqa_fx["cases"]) == 10000
    wrong = []
    for row in vqa_fx["cases"]:
        pred, answers = strings[row[0]], [strings[i] for i in row[1]]
        got = vqa_accuracy(pred, answers, version)
        if got != row[col]:  # exactly equal, not approximately
            wrong.append((pred, answers, row[col], got))
    assert wrong == []


def test_vqa_versions_differ_on_the_fixture(vqa_fx):
    """The fixture tells the versions apart (else one implementation could pass for both)."""
    differ = [r for r in vqa_fx["cases"] if r[2] != r[3]]
    assert len(differ) > 1000
    assert any(len(set(r[1])) == 1 for r in differ)  # all ten answers the same
    assert any(len(set(r[1])) > 1 for r in differ)


def test_normaliser_and_exact_match_equal_the_official_rules(vqa_fx):
    norm = vqa_fx["normalise"]
    assert len(norm) > 300
    assert {k: normalize_answer(k) for k in norm} == norm
    keys = sorted(norm)
    for a, b in zip(keys, keys[1:] + keys[:1]):  # every string against itself and a neighbour
        assert exact_match(a, [a]) == 1.0
        assert exact_match(a, [b]) == float(norm[a] == norm[b])


# ------------------------------------------------------------------------------------------------
# captions: built-in tokenizer and scorers, no Java needed


def _sentences(cap_fx):
    for it in cap_fx["items"]:
        yield it["candidate"], it["candidate_tokens"]
        yield from zip(it["references"], it["reference_tokens"])


def test_builtin_tokenizer_equals_java_on_real_captions(cap_fx):
    pairs = list(_sentences(cap_fx))
    assert len(pairs) == 7000
    differ = [(raw, java, ptb_tokenize(raw)) for raw, java in pairs if ptb_tokenize(raw) != java]
    assert len(differ) <= len(pairs) // 1000, differ[:5]  # >= 99.9% equal (all 7,000 at the time of writing)
    # the fixture exercises what the old tokenizer got wrong
    java = " ".join(j for _, j in pairs)
    assert "-lrb-" in java and " st. " in java


@pytest.mark.parametrize("metric,key", [(bleu, "bleu_4"), (rouge_l, "rouge_l"), (cider_d, "cider")])
def test_builtin_scorers_equal_pycocoevalcap_on_its_tokens(cap_fx, metric, key):
    """Given coco-caption's tokens, the pure-Python scorers give its numbers (BLEU clipping and
    closest reference length, CIDEr-D clipping and length penalty, ROUGE-L's separate P/R max)."""
    items = cap_fx["items"]
    got = metric([it["candidate_tokens"] for it in items], [it["reference_tokens"] for it in items],
                 tokenize=False, backend="builtin")
    assert got.score == pytest.approx(cap_fx["corpus"][key], rel=1e-9, abs=1e-12)
    assert got.per_item == pytest.approx([it[key] for it in items], rel=1e-9, abs=1e-12)
    if key == "bleu_4":
        assert [got.details[f"bleu_{k}"] for k in (1, 2, 3)] == pytest.approx(
            [cap_fx["corpus"][f"bleu_{k}"] for k in (1, 2, 3)], rel=1e-9)


def test_builtin_pipeline_corpus_scores_match_official(cap_fx):
    items = cap_fx["items"]
    cands, refs = [it["candidate"] for it in items], [it["references"] for it in items]
    assert abs(cider_d(cands, refs, backend="builtin").score - cap_fx["corpus"]["cider"]) <= 1e-4
    assert abs(bleu(cands, refs, backend="builtin").score - cap_fx["corpus"]["bleu_4"]) <= 1e-4
    assert abs(rouge_l(cands, refs, backend="builtin").score - cap_fx["corpus"]["rouge_l"]) <= 1e-4


# ------------------------------------------------------------------------------------------------
# captions: the official backend (Java + pycocoevalcap)


def test_official_backend_equals_coco_caption_on_the_fixture(cap_fx):
    _require_official()
    items = cap_fx["items"]
    cands, refs = [it["candidate"] for it in items], [it["references"] for it in items]
    for metric, key in [(bleu, "bleu_4"), (rouge_l, "rouge_l"), (cider_d, "cider")]:
        got = metric(cands, refs, backend="official")
        assert got.backend == "official" and got.tokenizer.startswith("java-ptb")
        assert got.score == pytest.approx(cap_fx["corpus"][key], rel=1e-9, abs=1e-9), key
        assert got.per_item == pytest.approx([it[key] for it in items], rel=1e-9, abs=1e-9), key


def test_official_tokenizer_equals_pycocoevalcaps_own_call(cap_fx):
    """Live: pycocoevalcap's PTBTokenizer.tokenize (it writes a temporary file beside its jar) and
    our Java call give the same tokens on captions with brackets, abbreviations, clitics, quotes."""
    _require_official()
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    raw = [r for it in cap_fx["items"][:300] for r in it["references"]]
    raw += ['A "Stop" sign (red) on Main St.', "a dog 's hat!!!", "Mr. and Mrs. Smith etc.", "22 3/4 st.\nnext"]
    theirs = PTBTokenizer().tokenize({0: [{"caption": c} for c in raw]})[0]
    assert official.java_tokenize(raw) == theirs
    assert theirs[-4:] == ["a stop sign -lrb- red -rrb- on main st.", "a dog 's hat !!!", "mr. and mrs. smith etc.",
                           "22\u00a03/4 st. next"]
