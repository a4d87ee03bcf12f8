"""Metrics (mmict_core.evaluate.metrics): the official VQA accuracy on hand-checked cases, BLEU-4,
ROUGE-L and CIDEr-D against plain re-computations written here from the published formulas, known
identities, and (when installed) pycocoevalcap's own scorers."""
from __future__ import annotations

import math
import os
import random
import sys
from collections import Counter

import pytest

from mmict_core.evaluate.metrics import (CiderD, bleu, cider_d, mean_vqa_accuracy, normalize_prediction, ptb_tokenize,
                                         rouge_l, score, vqa_accuracy, vqa_report)
from mmict_core.evaluate.metrics import _common
from mmict_core.evaluate.metrics.rouge import lcs_length

HAVE_COCO = _common.have_pycocoevalcap()
# under CI (env CI set) a missing pycocoevalcap is a failure, not a skip: CI installs it (the test extra)
needs_coco = pytest.mark.skipif(not HAVE_COCO and not os.environ.get("CI"),
                                reason="pycocoevalcap not installed (pip install 'pycocoevalcap>=1.2')")
BACKENDS = ["builtin"] + (["pycocoevalcap"] if HAVE_COCO or os.environ.get("CI") else [])


# ------------------------------------------------------------------------------------------------
# VQA accuracy


def loo_accuracy(pred, answers):
    """Independent: for each of the 10 answers, drop it and count matches among the other 9."""
    accs = []
    for i in range(len(answers)):
        others = answers[:i] + answers[i + 1:]
        accs.append(min(1.0, others.count(pred) / 3))
    return sum(accs) / len(accs)


@pytest.mark.parametrize("n_agree,expected", [
    (0, 0.0),
    # 1 of 10: the 9 subsets that keep the matching answer have 1 match -> 1/3; the one that drops it -> 0.
    #          (9 * 1/3 + 0) / 10 = 0.3
    (1, 0.3),
    # 2 of 10: 8 subsets keep both -> 2/3; 2 subsets drop one -> 1/3.  (8 * 2/3 + 2 * 1/3) / 10 = 0.6
    (2, 0.6),
    # 3 of 10: 7 subsets keep all three -> 1; 3 subsets drop one -> 2/3.  (7 + 3 * 2/3) / 10 = 0.9
    #          (the shorthand min(#humans / 3, 1) says 1.0; the official leave-one-out mean says 0.9)
    (3, 0.9),
    # 4 of 10: 6 subsets keep four -> 1; 4 subsets keep three -> 1.  = 1.0
    (4, 1.0),
    (10, 1.0),
])
def test_vqa_accuracy_leave_one_out(n_agree, expected):
    answers = ["cat"] * n_agree + ["dog", "bird", "fish", "cow", "pig", "hen", "fox", "owl", "bee", "ant"][: 10 - n_agree]
    assert vqa_accuracy("cat", answers) == pytest.approx(expected)
    assert loo_accuracy("cat", answers) == pytest.approx(expected)


@pytest.mark.parametrize("pred,answers,expected", [
    ("two", ["2"] * 10, 1.0),                      # number word -> digit in the prediction
    ("Two", ["2"] * 3 + ["3"] * 7, 0.9),
    ("a dog", ["dog"] * 10, 1.0),                  # article dropped
    ("The Dog", ["dog"] * 4 + ["cat"] * 6, 1.0),
    ("dog!", ["dog"] * 10, 1.0),                   # "!" not next to a space -> space, then stripped
    ("dog.", ["dog"] * 10, 1.0),                   # period not before a digit removed
    ("  dog\n", ["dog"] * 10, 1.0),
    ("3.5", ["3.5"] * 10, 1.0),                    # decimal point kept
    ("1,000", ["1000"] * 10, 1.0),                 # digit,digit -> punctuation dropped
    ("dont know", ["don't know"] * 10, 1.0),       # contraction restored
    ("yes", ["no"] * 10, 0.0),
    ("eleven", ["11"] * 10, 0.0),                  # only none/zero..ten are mapped
    # human answers get punctuation handling only, and only when they differ:
    ("dog", ["dog."] * 2 + ["cat"] * 8, 0.6),
    ("dog", ["dog."] * 10, 0.0),                   # all identical -> compared as stored
    ("2", ["two"] * 10, 0.0),                      # digits/articles are never applied to human answers
])
def test_vqa_accuracy_normalisation(pred, answers, expected):
    assert vqa_accuracy(pred, answers) == pytest.approx(expected)


def test_vqa_normalize_prediction_and_report():
    assert normalize_prediction("The two dogs, aren't they?") == "2 dogs aren't they"
    assert normalize_prediction("red-white") == "red white"      # inner punctuation -> space
    assert normalize_prediction("red - white") == "red white"    # punctuation next to a space removed
    assert normalize_prediction("Im here") == "im here"          # the official table's "Im" never matches
    assert normalize_prediction("its oclock") == "its o'clock"    # "its" is not in the table, "oclock" is
    preds = ["yes", "2", "red"]
    answers = [["yes"] * 10, ["2"] * 2 + ["3"] * 8, ["blue"] * 10]
    rep = vqa_report(preds, answers, groups=["yes/no", "number", "other"])
    assert rep["per_item"] == pytest.approx([1.0, 0.6, 0.0])
    assert rep["overall"] == pytest.approx(1.6 / 3) == mean_vqa_accuracy(preds, answers)
    assert rep["by_group"] == pytest.approx({"yes/no": 1.0, "number": 0.6, "other": 0.0})
    assert rep["vqa_version"] == "2017" and "458a8b2" in rep["source"]
    assert vqa_report(preds, answers, vqa_version="head")["vqa_version"] == "head"
    with pytest.raises(ValueError, match="needs the human answers"):
        vqa_accuracy("yes", [])
    with pytest.raises(ValueError, match="2 predictions but 1 answer lists"):
        mean_vqa_accuracy(["a", "b"], [["a"]])


def test_vqa_accuracy_matches_independent_loo_on_random_cases():
    rng = random.Random(0)
    vocab = ["yes", "no", "2", "3", "red", "blue"]
    for _ in range(200):
        answers = [rng.choice(vocab) for _ in range(10)]
        pred = rng.choice(vocab)
        assert vqa_accuracy(pred, answers) == pytest.approx(loo_accuracy(pred, answers))


# ------------------------------------------------------------------------------------------------
# tokenizer


@pytest.mark.parametrize("raw,tokens", [
    ("A man riding a horse.", "a man riding a horse"),
    ("The dog's ball, in the park!", "the dog 's ball in the park"),
    ('I don\'t know; "great"...', "i do n't know great"),
    # coco-caption's removal list spells the brackets in upper case, so the lower-cased -lrb- -rrb- stay
    ("A black-and-white photo (old) of 1,000 people at 10:30.",
     "a black-and-white photo -lrb- old -rrb- of 1,000 people at 10:30"),
    # the rest: what the CoreNLP 3.4.1 jar prints for these inputs (probed with its PTBTokenizer)
    ("A dog 's hat on Main St. and Mr. Smith", "a dog 's hat on main st. and mr. smith"),
    ("A sign that reads K. Smith etc. Wow!!! Really?", "a sign that reads k. smith etc. wow !!! really"),
    ("a cat.  Ready to bat., ok", "a cat ready to bat. ok"),
    ("a [box] {x} at 6:40PM and #25 or a/b or pizza/", "a -lsb- box -rsb- -lcb- x -rcb- at 6:40 pm and # 25 or a/b or pizza /"),
    ("22 3/4 st. and beach--kite and gonna", "22\u00a03/4 st. and beach kite and gon na"),
    ("No. 5 and no. and Mass. and mass.", "no. 5 and no and mass. and mass"),
    ("two dogs - playing", "two dogs playing"),
    ("He cannot go", "he can not go"),
    ("U.S. flag, 3.5 m", "u.s. flag 3.5 m"),
    ("  Two\nLines  ", "two lines"),
    ("", ""),
])
def test_ptb_tokenize(raw, tokens):
    assert ptb_tokenize(raw) == tokens


# ------------------------------------------------------------------------------------------------
# BLEU: a plain re-computation (Papineni et al. 2002, coco-caption's 'closest' reference length)


def plain_bleu(cands, refs, n=4):
    c_len = r_len = 0
    matched, total = [0] * n, [0] * n
    for cand, rs in zip(cands, refs):
        cw = cand.split()
        rws = [r.split() for r in rs]
        c_len += len(cw)
        r_len += sorted((abs(len(r) - len(cw)), len(r)) for r in rws)[0][1]
        for k in range(1, n + 1):
            grams = Counter(tuple(cw[i:i + k]) for i in range(len(cw) - k + 1))
            for g, cnt in grams.items():
                best = max(sum(1 for i in range(len(r) - k + 1) if tuple(r[i:i + k]) == g) for r in rws)
                matched[k - 1] += min(cnt, best)
            total[k - 1] += max(0, len(cw) - k + 1)
    log_p = sum(math.log(matched[k] / total[k]) for k in range(n)) / n
    bp = 1.0 if c_len >= r_len else math.exp(1 - r_len / c_len)
    return bp * math.exp(log_p)


CAPS = ["a man is riding a horse on the beach", "two dogs play with a red ball in the grass",
        "a plate of food with broccoli"]
REFS = [["a man rides a horse on the beach", "a person is riding a horse near the sea"],
        ["two dogs are playing with a ball in the grass", "dogs play with a red ball"],
        ["a plate with food and broccoli on it", "a white plate of food with some broccoli", "food on a plate"]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_bleu_against_plain_recomputation_and_hand_values(backend):
    got = bleu(CAPS, REFS, backend=backend)
    assert got.backend == backend
    assert got.score == pytest.approx(plain_bleu(CAPS, REFS), rel=1e-6)
    assert got.details["bleu_2"] == pytest.approx(plain_bleu(CAPS, REFS, 2), rel=1e-6)
    assert got.per_item[0] == pytest.approx(plain_bleu(CAPS[:1], REFS[:1]), rel=1e-6)
    # by hand: "the cat sat on the mat" vs "the cat is on the mat" / "there is a cat on the mat"
    # unigrams 5/6 match (all but "sat"); bigrams "the cat", "on the", "the mat" = 3/5; closest ref length 6 -> BP 1
    one = bleu(["the cat sat on the mat"], [["the cat is on the mat", "there is a cat on the mat"]], backend=backend)
    assert one.details["bleu_1"] == pytest.approx(5 / 6)
    assert one.details["bleu_2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    # brevity penalty: 3 words against a 6-word reference -> exp(1 - 6/3)
    short = bleu(["the cat sat"], [["the cat sat on the mat"]], n=1, backend=backend)
    assert short.score == pytest.approx(math.exp(1 - 2), rel=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bleu_identities(backend):
    assert bleu(CAPS, [[c] for c in CAPS], backend=backend).score == pytest.approx(1.0)
    assert bleu(["a b c d e"], [["a b c d e", "x y z"]], backend=backend).score == pytest.approx(1.0)
    assert bleu(["completely different words here"], [["a man on a horse"]], backend=backend).score < 1e-6
    # mappings keyed by image id give the same as aligned lists
    by_id = bleu({"x": CAPS[0], "y": CAPS[1]}, {"y": REFS[1], "x": REFS[0]}, backend=backend)
    assert by_id.score == pytest.approx(bleu(CAPS[:2], REFS[:2], backend=backend).score)


# ------------------------------------------------------------------------------------------------
# ROUGE-L


def test_lcs_known_values():
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4
    assert lcs_length("the cat sat on the mat".split(), "the cat is on the mat".split()) == 5
    assert lcs_length([], ["a"]) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_rouge_l_known_cases(backend):
    # LCS "the cat on the mat" = 5; P = R = 5/6 -> F = 5/6 whatever beta
    assert rouge_l(["the cat sat on the mat"], [["the cat is on the mat"]], backend=backend).score == pytest.approx(5 / 6)
    # LCS 3: P = 3/3, R = 3/6; F = (1 + 1.2^2) * 1 * 0.5 / (0.5 + 1.2^2 * 1) = 1.22 / 1.94
    assert rouge_l(["the cat sat"], [["the cat sat on the mat"]], backend=backend).score == pytest.approx(1.22 / 1.94)
    # P and R are maximised separately over the references: P = 1 (ref 1), R = 1 (ref 2)
    assert rouge_l(["the cat sat"], [["the cat sat on the mat", "cat"]], backend=backend).score == pytest.approx(1.0)
    assert rouge_l(CAPS, [[c] for c in CAPS], backend=backend).score == pytest.approx(1.0)
    assert rouge_l(["x y"], [["a b"]], backend=backend).score == 0.0
    res = rouge_l(["the cat sat", "x y"], [["the cat sat on the mat"], ["a b"]], backend=backend)
    assert res.per_item == pytest.approx([1.22 / 1.94, 0.0]) and res.score == pytest.approx(1.22 / 1.94 / 2)


# ------------------------------------------------------------------------------------------------
# CIDEr-D: a plain re-computation (Vedantam et al. 2015, coco-caption's CIDEr-D variant)


def plain_cider_d(cands, refs, df_corpus=None, sigma=6.0):
    df_corpus = df_corpus or refs
    grams = lambda s, k: Counter(tuple(s.split()[i:i + k]) for i in range(len(s.split()) - k + 1))  # noqa: E731
    n_docs = len(df_corpus)
    scores = []
    for cand, rs in zip(cands, refs):
        per_n = []
        for k in range(1, 5):
            def tfidf(s, k=k):
                return {g: tf * (math.log(n_docs) - math.log(max(1, sum(any(g in grams(r, k) for r in doc)
                                                                          for doc in df_corpus))))
                        for g, tf in grams(s, k).items()}
            vc = tfidf(cand)
            total = 0.0
            for r in rs:
                vr = tfidf(r)
                dot = sum(min(w, vr.get(g, 0.0)) * vr.get(g, 0.0) for g, w in vc.items())
                nc, nr = math.sqrt(sum(w * w for w in vc.values())), math.sqrt(sum(w * w for w in vr.values()))
                sim = dot / (nc * nr) if nc and nr else dot
                # coco-caption measures length in bigrams (words - 1)
                delta = max(0, len(cand.split()) - 1) - max(0, len(r.split()) - 1)
                total += sim * math.exp(-delta ** 2 / (2 * sigma ** 2))
            per_n.append(total / len(rs))
        scores.append(10 * sum(per_n) / 4)
    return sum(scores) / len(scores), scores


@pytest.mark.parametrize("backend", BACKENDS)
def test_cider_d_against_plain_recomputation(backend):
    refs = [[ptb_tokenize(r) for r in rs] for rs in REFS]
    cands = [ptb_tokenize(c) for c in CAPS]
    want, want_items = plain_cider_d(cands, refs)
    got = cider_d(CAPS, REFS, backend=backend)
    assert got.score == pytest.approx(want, rel=1e-9) and got.per_item == pytest.approx(want_items, rel=1e-9)
    assert got.score > 0


def test_cider_d_identities_and_corpus_frequencies():
    # a candidate equal to its only reference, all n-grams rarer than "every image": cosine 1 at each n -> 10
    refs = [["a cat on a mat"], ["the dog in the park"], ["two birds"]]
    assert cider_d(["the dog in the park"], [refs[1]], df_references=refs).score == pytest.approx(10.0)
    # one image only: log(N) = 0, every weight is 0 -> CIDEr 0 (why per-item CIDEr needs corpus frequencies)
    assert cider_d(["a cat on a mat"], [refs[0]], backend="builtin").score == 0.0
    # frequencies fixed from the whole split: one item scored alone = its score in the whole-split call
    whole = cider_d(CAPS, REFS, backend="builtin")
    scorer = CiderD(REFS)
    for i in range(3):
        assert scorer.score([CAPS[i]], [REFS[i]]).score == pytest.approx(whole.per_item[i])
    assert scorer.score(CAPS, REFS).details["n_documents"] == 3
    # a different corpus changes the idf and so the score; the plain formula agrees
    corpus = REFS + [["a man on a horse"], ["food"]]
    toks = [[ptb_tokenize(r) for r in rs] for rs in corpus]
    got = cider_d(CAPS[:1], REFS[:1], df_references=corpus)
    assert got.score == pytest.approx(plain_cider_d([ptb_tokenize(CAPS[0])], toks[:1], toks)[0], rel=1e-9)
    with pytest.raises(ValueError, match="df_references"):
        cider_d(CAPS, REFS, df_references=REFS, backend="pycocoevalcap")


# ------------------------------------------------------------------------------------------------
# backends and input checking


@needs_coco
def test_builtin_equals_pycocoevalcap_on_random_captions():
    before = set(sys.modules)
    rng = random.Random(1)
    vocab = "a man dog cat on the red ball sits runs park in with two".split()
    sent = lambda: " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 12)))  # noqa: E731
    for _ in range(20):
        n = rng.randint(1, 6)
        cands, refs = [sent() for _ in range(n)], [[sent() for _ in range(rng.randint(1, 5))] for _ in range(n)]
        for metric in (bleu, rouge_l, cider_d):
            a, b = metric(cands, refs, backend="builtin"), metric(cands, refs, backend="pycocoevalcap")
            assert a.score == pytest.approx(b.score, rel=1e-9, abs=1e-12), metric.__name__
            assert a.per_item == pytest.approx(b.per_item, rel=1e-9, abs=1e-12), metric.__name__
    # only the pure-Python scorers were imported: no Java tokenizer, METEOR or SPICE
    assert not any(m.startswith(("pycocoevalcap.tokenizer", "pycocoevalcap.meteor", "pycocoevalcap.spice",
                                 "pycocoevalcap.eval")) for m in set(sys.modules) - before)


def test_auto_backend_and_missing_pycocoevalcap(monkeypatch):
    from mmict_core.evaluate.metrics import official

    expected = "official" if official.available() else ("pycocoevalcap" if HAVE_COCO else "builtin")
    got = bleu(CAPS, REFS)
    assert got.backend == expected
    assert got.tokenizer.startswith("java-ptb" if expected == "official" else "builtin-ptb")
    assert bleu(CAPS, REFS, tokenize=False).tokenizer == "none"
    # no Java: auto falls back; asking for official names the install command
    monkeypatch.setattr(official.shutil, "which", lambda name: None)
    assert bleu(CAPS, REFS).backend == ("pycocoevalcap" if HAVE_COCO else "builtin")
    with pytest.raises(RuntimeError, match=r"Java: apt-get install default-jre-headless"):
        cider_d(CAPS, REFS, backend="official")
    monkeypatch.setattr(_common, "have_pycocoevalcap", lambda: False)
    assert bleu(CAPS, REFS).backend == "builtin"
    assert bleu(CAPS, REFS).tokenizer.startswith("builtin-ptb")
    with pytest.raises(ImportError, match=r"pip install 'pycocoevalcap>=1.2'"):
        rouge_l(CAPS, REFS, backend="pycocoevalcap")
    with pytest.raises(ValueError, match="unknown backend"):
        cider_d(CAPS, REFS, backend="java")


def test_caption_input_errors():
    with pytest.raises(ValueError, match="2 candidates but 1 reference lists"):
        bleu(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="at least one reference"):
        rouge_l(["a"], [[]])
    with pytest.raises(ValueError, match="different keys"):
        cider_d({"a": "x"}, {"b": ["x"]})
    with pytest.raises(TypeError, match="not one string"):
        bleu("a cat", [["a cat"]])
    with pytest.raises(ValueError, match="no captions"):
        bleu([], [])
    # tokenize=False takes already tokenised text as is
    assert bleu(["A B C D"], [["a b c d"]], tokenize=False).score < 1e-6
    assert bleu(["A B C D"], [["a b c d"]]).score == pytest.approx(1.0)


def test_score_dispatches_by_task_metric():
    assert score("vqa_accuracy", ["two"], [["2"] * 2 + ["3"] * 8]) == pytest.approx(0.6)
    # the two official versions differ when all ten answers agree: HEAD leaves the prediction as is
    assert score("vqa_accuracy", ["Two"], [["2"] * 10]) == 1.0
    assert score("vqa_accuracy", ["Two"], [["2"] * 10], vqa_version="head") == 0.0
    with pytest.raises(ValueError, match="unknown vqa_version"):
        score("vqa_accuracy", ["2"], [["2"]], vqa_version="2015")
    assert score("bleu", CAPS, REFS, backend="builtin") == pytest.approx(bleu(CAPS, REFS, backend="builtin").score)
    assert score("accuracy", ["The dog", "cat"], [["dog"], ["bird"]]) == 0.5
    assert score("bleu", CAPS, REFS) == pytest.approx(bleu(CAPS, REFS).score)
    assert score("rouge", CAPS, REFS) == pytest.approx(rouge_l(CAPS, REFS).score)
    assert score("cider", CAPS[:1], REFS[:1], df_references=REFS) == pytest.approx(CiderD(REFS).score(CAPS[:1], REFS[:1]).score)
    with pytest.raises(ValueError, match="unknown metric"):
        score("meteor", CAPS, REFS)


def test_metrics_and_real_data_import_no_model_code():
    import subprocess

    code = ("import sys, mmict_core.evaluate.metrics, mmict_core.data.real; "
            "print(sorted(m for m in ('torch', 'transformers', 'mmict_core.backbones', 'mmict_core.methods') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
