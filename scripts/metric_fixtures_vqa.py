"""Build tests/fixtures/vqa_official.json: VQA accuracy stress cases scored by the official
evaluation script in both versions, and answer strings normalised by it.

Get the two versions of the official script (GT-Vision-Lab/VQA, Python 2 code; this script turns
its ``print`` statements into calls and runs it unchanged otherwise):

    git clone https://github.com/GT-Vision-Lab/VQA && cd VQA
    git show 458a8b2:PythonEvaluationTools/vqaEvaluation/vqaEval.py > vqaEval_2017.py
    git show a013f00:PythonEvaluationTools/vqaEvaluation/vqaEval.py > vqaEval_head.py

and run (the command recorded in the fixture):

    python scripts/metric_fixtures_vqa.py --eval-2017 vqaEval_2017.py --eval-head vqaEval_head.py \
        --out tests/fixtures/vqa_official.json

Cases (seeded): ten human answers and a prediction drawn from variants of a few answers -- number
words and digits ("two", "Two", "2", "none", "eleven"), articles ("a dog", "The dog"), punctuation
("dog.", "dog!", "red-white", "red - white", "(yes)", "a/b"), contractions ("dont", "oclock", "its",
"im", "yall"), "1,000", "3.5", whitespace, case -- with 0..10 answers agreeing, a fifth of them with
all ten answers identical.  The accuracy recorded is the official script's own per-question value
before its rounding (its ``setEvalQA`` is given the raw number).
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

GROUPS = [
    ["2", "two", "Two", "TWO", "2.", "two.", " 2 ", "2\n", "3", "three"],
    ["0", "none", "None", "zero", "0 ", "no", "nothing"],
    ["10", "ten", "Ten", "10.", "eleven", "11"],
    ["dog", "a dog", "the dog", "The Dog", "dog.", "dog!", "dogs", "an dog", "A dog."],
    ["apple", "an apple", "An Apple", "the apple", "apples"],
    ["yes", "Yes", "yes.", "yes!", "(yes)", "yes?", "Yes!!", "yes,", "no", "No."],
    ["red white", "red-white", "red - white", "red/white", "red_white", "red, white", "Red White", "redwhite"],
    ["1000", "1,000", "1, 000", "1 000", "1.000", "one thousand"],
    ["3.5", "3.5.", "3,5", "3 .5", "three point five", "35"],
    ["don't know", "dont know", "Dont know", "do not know", "don't  know", "dont know."],
    ["o'clock", "oclock", "3 oclock", "3 o'clock", "3:00"],
    ["it's", "its", "Its", "it is", "its'"],
    ["i'm", "im", "Im", "I'm", "i am"],
    ["y'all", "yall", "Yall", "you all"],
    ["let's", "lets", "Lets", "let us"],
    ["can't", "cant", "Can't", "cannot", "can not"],
    ["a/b", "a / b", "a b", "ab", "a\\b", "a+b", "a=b", "a@b", "<a>", "[a]", "{a}", "a;b", '"a"', "`a`"],
    ["black and white", "black & white", "black/white", "Black and White", "black, white"],
    ["tennis", "tennis ", " tennis", "tennis\t", "Tennis.", "tennis...", "tennis. ", "..tennis"],
    ["n/a", "N/A", "na", "not applicable"],
]


def make_cases(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        group = rng.choice(GROUPS)
        pool = group + (rng.choice(GROUPS) if rng.random() < 0.3 else [])
        if rng.random() < 0.2:
            answers = [rng.choice(group)] * 10  # all identical
        else:
            k = rng.randint(0, 10)
            a, others = rng.choice(group), pool
            answers = [a] * k + [rng.choice(others) for _ in range(10 - k)]
            rng.shuffle(answers)
        pred = rng.choice(pool)
        cases.append({"prediction": pred, "answers": answers})
    return cases


def load_official(path: str):
    """The VQAEval class of an official vqaEval.py (Python 2 ``print`` statements made calls)."""
    src = Path(path).read_text(encoding="utf-8")
    src = re.sub(r"^(\s*)print (.+)$", r"\1print(\2)", src, flags=re.M)
    ns: dict = {"__name__": "vqaEval_official"}
    exec(compile(src, path, "exec"), ns)  # noqa: S102 -- the official script, run as it is
    return ns["VQAEval"]


class _Api:
    def __init__(self, qa: dict):
        self.qa = qa

    def getQuesIds(self):
        return list(self.qa)


def official_accuracies(vqa_eval_cls, cases: list[dict]) -> list[float]:
    gts = {i: {"question_id": i, "question_type": "t", "answer_type": "other",
               "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
                           for j, a in enumerate(c["answers"])]} for i, c in enumerate(cases)}
    res = {i: {"question_id": i, "answer": c["prediction"]} for i, c in enumerate(cases)}
    ev = vqa_eval_cls(_Api(gts), _Api(res), n=2)
    raw: dict = {}
    ev.setEvalQA = lambda qid, acc: raw.__setitem__(qid, acc)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
    return [raw[i] for i in range(len(cases))]


def official_normalise(vqa_eval_cls, strings: list[str]) -> list[str]:
    ev = vqa_eval_cls(_Api({}), _Api({}), n=2)
    out = []
    for s in strings:
        s = s.replace("\n", " ").replace("\t", " ").strip()
        out.append(ev.processDigitArticle(ev.processPunctuation(s)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--eval-2017", required=True)
    ap.add_argument("--eval-head", required=True)
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="tests/fixtures/vqa_official.json")
    a = ap.parse_args(argv)
    v2017, vhead = load_official(a.eval_2017), load_official(a.eval_head)
    cases = make_cases(a.cases, a.seed)
    for c, x, y in zip(cases, official_accuracies(v2017, cases), official_accuracies(vhead, cases)):
        c["acc_2017"], c["acc_head"] = x, y
    # the normaliser: every answer variant, plus every contraction key of the official table
    strings = sorted({s for g in GROUPS for s in g} | set(v2017(_Api({}), _Api({})).contractions)
                     | {k + " " + w for k in ("a", "the", "two") for g in GROUPS for w in g[:2]})
    norm = dict(zip(strings, official_normalise(v2017, strings)))
    assert norm == dict(zip(strings, official_normalise(vhead, strings))), "the versions' normalisers differ"
    # compact: every string once, a case as [prediction, [ten answers], acc_2017, acc_head] by index
    table = sorted({c["prediction"] for c in cases} | {x for c in cases for x in c["answers"]})
    index = {s: i for i, s in enumerate(table)}
    rows = [[index[c["prediction"]], [index[x] for x in c["answers"]], c["acc_2017"], c["acc_head"]] for c in cases]
    out = {"command": "python scripts/metric_fixtures_vqa.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "produced_by": "GT-Vision-Lab/VQA vqaEval.py at 458a8b2 (acc_2017) and a013f00 (acc_head)",
           "case_format": "[prediction, [answers], acc_2017, acc_head], strings as indices into 'strings'",
           "normalise": norm, "strings": table, "cases": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(out, ensure_ascii=False, separators=(",", ":")).replace("],[", "],\n[")
    Path(a.out).write_text(text + "\n", encoding="utf-8")
    differ = sum(c["acc_2017"] != c["acc_head"] for c in cases)
    print(f"{len(cases)} cases ({differ} where the versions differ), {len(norm)} normalised strings -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
