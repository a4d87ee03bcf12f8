"""Build tests/fixtures/captions_official.json: real COCO captions with the tokens and scores that
coco-caption's own pipeline (pycocoevalcap 1.2: the Java PTBTokenizer, then Bleu(4), Rouge, Cider)
gives them.  Needs Java and pycocoevalcap.

The sentences are human and machine COCO val2014 captions (CC BY 4.0) from the coco-caption
repository (github.com/tylin/coco-caption); get the three files with

    git clone https://github.com/tylin/coco-caption && cd coco-caption
    git show 3a9afb2:results/captions_val2014_fakecap_results.json > fakecap.json
    git show 9cfd5a3:misc/sentence_test.json > sentence_test.json
    git show 61e2b7b:data/captions_val2014_submission.json > submission.json

and run (the command recorded in the fixture):

    python scripts/metric_fixtures_captions.py --fakecap fakecap.json --sentences sentence_test.json \
        --submission submission.json --out tests/fixtures/captions_official.json

Items: the first ``--items`` images of the fake-caption results; candidate = that caption;
references = the image's caption in sentence_test.json, its caption in submission.json and
``--extra`` captions drawn (seeded) from sentence_test.json, so that references share words with
the candidate as in a real split and raw punctuation, capitals and typos are kept.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path


def build_items(fakecap: list, sentences: dict, submission: list, n_items: int, n_extra: int,
                seed: int) -> list[dict]:
    sub = {str(x["image_id"]): x["caption"] for x in submission}
    pool = sorted(sentences.values())
    rng = random.Random(seed)
    items = []
    for x in fakecap[:n_items]:
        k = str(x["image_id"])
        refs = [sentences[k], sub[k]] + rng.sample(pool, n_extra)
        items.append({"image_id": k, "candidate": x["caption"], "references": refs})
    return items


def official(items: list[dict]) -> dict:
    """Tokens and scores from pycocoevalcap itself, called as coco-caption's COCOEvalCap does."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = {i: [{"caption": r} for r in it["references"]] for i, it in enumerate(items)}
    res = {i: [{"caption": it["candidate"]}] for i, it in enumerate(items)}
    tok = PTBTokenizer()
    gts_t, res_t = tok.tokenize(gts), tok.tokenize(res)
    bleu, bleu_items = Bleu(4).compute_score(gts_t, res_t, verbose=0)
    rouge, rouge_items = Rouge().compute_score(gts_t, res_t)
    cider, cider_items = Cider().compute_score(gts_t, res_t)
    for i, it in enumerate(items):
        it["candidate_tokens"] = res_t[i][0]
        it["reference_tokens"] = gts_t[i]
        it["bleu_4"], it["rouge_l"], it["cider"] = bleu_items[3][i], float(rouge_items[i]), float(cider_items[i])
    corpus = {f"bleu_{k + 1}": float(b) for k, b in enumerate(bleu)}
    corpus.update(rouge_l=float(rouge), cider=float(cider))
    return corpus


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fakecap", required=True)
    ap.add_argument("--sentences", required=True)
    ap.add_argument("--submission", required=True)
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--extra", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="tests/fixtures/captions_official.json")
    a = ap.parse_args(argv)
    load = lambda p: json.loads(Path(p).read_text(encoding="utf-8"))  # noqa: E731
    items = build_items(load(a.fakecap), load(a.sentences), load(a.submission), a.items, a.extra, a.seed)
    corpus = official(items)
    import importlib.metadata as md

    out = {"command": "python scripts/metric_fixtures_captions.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "source": "COCO val2014 captions (CC BY 4.0) from github.com/tylin/coco-caption; see the script",
           "produced_by": f"pycocoevalcap {md.version('pycocoevalcap')} (Java PTBTokenizer, Bleu(4), Rouge, Cider)",
           "corpus": corpus, "items": items}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    n = sum(1 + len(it["references"]) for it in items)
    print(f"{len(items)} items, {n} sentences -> {a.out}; corpus {corpus}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
