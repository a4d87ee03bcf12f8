"""Where a teaching VLM's clip captions go wrong: exact match by the number of events, and for each
wrong caption, what differs (the number of events, an actor's name, or what it does).

    python scripts/clip_caption_errors.py runs/v4-seed0 [--episodes 300] [--shots 0]

Test split, evaluation seed 0: the same episodes, generation length and answer normalisation as
`mmict eval --task clip-caption`.  A caption is
"the <actor> <does> and the <actor> <does>"; each event is compared with the reference event at the
same place.  One JSON line per model, with a few wrong captions as examples.
"""
from __future__ import annotations

import argparse
import collections
import json

import torch

from mmict_core.data.clips import EVENT_KINDS


def split_event(event: str) -> tuple[str, str]:
    """'the small red circle moves left' -> ('small red circle', 'moves left')."""
    words = event.split()
    if words and words[0] == "the":
        words = words[1:]
    for i, w in enumerate(words):
        if w in EVENT_KINDS:
            return " ".join(words[:i]), " ".join(words[i:])
    return " ".join(words), ""


def diagnose(pred: str, ref: str) -> list[str]:
    """The kinds of difference between a predicted and a reference caption (empty: equal)."""
    p, r = [e.strip() for e in pred.strip().split(" and ")], [e.strip() for e in ref.strip().split(" and ")]
    if p == r:
        return []
    if len(p) != len(r):
        return ["number of events"]
    kinds = []
    for pe, re_ in zip(p, r):
        (pa, pd), (ra, rd) = split_event(pe), split_event(re_)
        if pa != ra:
            kinds.append("actor")
        if pd != rd:
            kinds.append("verb" if pd.split()[:1] != rd.split()[:1] else "detail")
    return kinds or ["other"]


def errors(path: str, episodes: int, shots: int) -> dict:
    from mmict_core.backbones import TeachingVLM
    from mmict_core.evaluate.icl import evaluate_generation
    from mmict_core.evaluate.normalize import normalize_answer

    vlm = TeachingVLM.load(path)
    vlm.model.eval()
    # `mmict eval`'s own loop: the same episodes, generation length and (prediction, reference) pairs
    res = evaluate_generation(vlm.generate, "clip-caption", [shots], episodes=episodes, seed=0, batch_size=64,
                              keep_predictions=episodes, progress=False)[0]
    by_events, kinds, examples = collections.defaultdict(list), collections.Counter(), []
    for o, ref in res.predictions:
        ref = ref.strip()
        d = [] if normalize_answer(o) == normalize_answer(ref) else diagnose(o, ref)
        by_events[ref.count(" and ") + 1].append(not d)
        kinds.update(set(d))
        if d and len(examples) < 8:
            examples.append({"ref": ref, "pred": o.strip(), "diff": d})
    n = sum(len(v) for v in by_events.values())
    wrong = n - sum(sum(v) for v in by_events.values())
    return {"model": path, "shots": shots, "n": n, "exact": round((n - wrong) / n, 3),
            "by_events": {k: {"n": len(v), "exact": round(sum(v) / len(v), 3)} for k, v in sorted(by_events.items())},
            "wrong": wrong, "wrong_by_kind": dict(kinds.most_common()), "examples": examples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--episodes", type=int, default=300)
    ap.add_argument("--shots", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for m in a.models:
        print(json.dumps(errors(m, a.episodes, a.shots)), flush=True)


if __name__ == "__main__":
    main()
