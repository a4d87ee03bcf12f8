"""Analysis probe (not a claim, not the pre-registered setting): where the case-study adapters' video captions
go wrong on ``ft-video-caption``.  Each caption is split into its events ("... and ..."); each predicted event is
counted as

- ``right``: one of the query's events, under either naming convention;
- ``from a demo``: not one of the query's events, but one of the demonstrations' events (copied from the context);
- ``other``: neither; split further into ``right actor, wrong action`` (its actor, e.g. "red circle", as
  ``clip_caption_errors.split_event`` reads it, is one of the query's actors under either convention) and
  ``wrong actor``.

Also: the share of captions that repeat a demonstration's whole answer, and of captions with as many events as
the reference.  The adapters are the starter library's (seed 0); the episodes are the claim's test episodes.

Hub swaps (evaluation only; the LM is frozen in every method, so these inputs are well defined): MMICT's layout
with one part's M-Hub features taken from another trained hub —

- ``mmict/query-hub=vanilla-ft``: the demonstrations' text features from MMICT's hub, the query's query-token
  features from VanillaFT's (does MMICT's hub read the query's clip worse than VanillaFT's?);
- ``mmict/demo-hub=vanilla-ft``: the reverse (the demonstrations as VanillaFT's hub renders them).

    python scripts/probe_video_caption.py --shots 4 \\
        --out benchmarks/results/teaching-v2/v4-seed0/probe_video_caption.json
    python scripts/probe_video_caption.py --shots 4 --methods vanilla-ft,mmict,mmict/query-hub=vanilla-ft,mmict/demo-hub=vanilla-ft \\
        --out benchmarks/results/teaching-v2/v4-seed0/probe_video_caption_hub_swap.json
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from clip_caption_errors import split_event  # scripts/: the same actor / action split as the clip-caption probe

from mmict_core.evaluate.exact_match import exact_match, normalize_answer


def events(caption: str) -> list[str]:
    """'the red circle moves left and the blue cross appears' -> ['red circle moves left', 'blue cross appears']
    (the normalised events; articles dropped as the metric does)."""
    return [e.strip() for e in normalize_answer(caption).split(" and ") if e.strip()]


def classify(pred: str, refs: list[str], demo_answers: list[str]) -> Counter:
    """Counts of the predicted events that are right / from a demo / other (see the module's docstring)."""
    right = {e for r in refs for e in events(r)}
    demo = {e for d in demo_answers for e in events(d)}
    actors = {split_event(e)[0] for e in right}
    c = Counter()
    for e in events(pred):
        kind = "right" if e in right else "from a demo" if e in demo else "other"
        c[kind] += 1
        if kind == "other":
            c["right actor, wrong action" if split_event(e)[0] in actors else "wrong actor"] += 1
    return c


def hub_swap(mmict, *, demo_hub=None, query_hub=None):
    """A copy of the trained MMICT ``mmict`` whose demonstration features (``demo_hub``) or query features
    (``query_hub``) come from another trained hub method (e.g. VanillaFT): that method's Q-Former, query
    tokens and projection, attached inside MMICT's for that part only."""
    from mmict_core.methods.mmict import MMICT

    class HubSwap(MMICT):
        def hub_features(self, episodes):
            feats = super().hub_features(episodes)  # this MMICT's hub, attached
            for part, other in ((0, demo_hub), (1, query_hub)):
                if other is not None:
                    with other.attached():  # the other hub in the backbone for this part
                        theirs = super().hub_features(episodes)
                    feats = [tuple(t[i] if i == part else f[i] for i in range(2)) for f, t in zip(feats, theirs)]
            return feats

    swapped = HubSwap(mmict.backbone, mmict.config)
    swapped.load_state_dict(mmict.state_dict())
    return swapped


def build(bb, name: str, task: str, shots: int):
    """A starter-library method, or ``mmict/query-hub=M`` / ``mmict/demo-hub=M`` (:func:`hub_swap`)."""
    from mmict_core.casestudy import method_for

    if "/" not in name:
        return method_for(bb, name, task, shots=shots)
    base, _, swap = name.partition("/")
    part, _, other = swap.partition("=")
    if base != "mmict" or part not in ("query-hub", "demo-hub") or not other:
        raise SystemExit(f"bad swap {name!r}: use mmict/query-hub=METHOD or mmict/demo-hub=METHOD")
    hub = method_for(bb, other, task)
    return hub_swap(method_for(bb, "mmict", task, shots=shots), **{part.replace("-", "_"): hub})


def caption_events(m, task, k: int, episodes: int, split: str = "test") -> dict:
    """``m``'s captions of the claim's first ``episodes`` test episodes (k demonstrations, seed 0; or of
    ``split``'s, e.g. the training episodes): exact match, the shares of its events by :func:`classify`'s kinds,
    and the whole-caption counts."""
    import torch

    from mmict_core.data import make_episode

    tot, n_events_ok, whole_copy, exact = Counter(), 0, 0, 0
    examples = []
    for start in range(0, episodes, 25):
        # the training episodes as the trainer draws them (mmict_core.train: seed 0 is the starter library's)
        pool = {"pool_size": max(k, 1)} if split == "train" else {}
        eps = [make_episode(task, k, seed=0, index=i, split=split, **pool) for i in range(start, min(episodes, start + 25))]
        with torch.no_grad():
            outs = m.generate(eps, max_new_tokens=task.max_new_tokens)
        for ep, out in zip(eps, outs):
            refs = [*ep.query.answers, *([ep.query.meta["alternative"]] if ep.query.meta.get("alternative") else [])]
            demo_answers = [d.answer for d in ep.demos]
            tot += classify(out, refs, demo_answers)
            n_events_ok += len(events(out)) == len(events(ep.query.answer))
            whole_copy += exact_match(out, demo_answers)
            exact += exact_match(out, ep.query.answers)
            if len(examples) < 8:
                examples.append({"prediction": out, "reference": ep.query.answer, "demos": demo_answers})
    n_ev = sum(tot[key] for key in ("right", "from a demo", "other")) or 1
    return {"shots": k, "exact": exact / episodes,
            "events": {key: round(tot[key] / n_ev, 3) for key in ("right", "from a demo", "other",
                                                                  "right actor, wrong action", "wrong actor")},
            "predicted_events": n_ev, "same_event_count": n_events_ok / episodes,
            "repeats_a_whole_demo_answer": whole_copy / episodes, "examples": examples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--episodes", type=int, default=150)
    ap.add_argument("--methods", default="vanilla-ft,vanilla-ict,mmict")
    ap.add_argument("--split", default="test", help="the episodes' split: test (the claim's), or train (what the adapters were fitted on)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    from mmict_core.backbones import load_backbone
    from mmict_core.data import get_task

    task = get_task("ft-video-caption")
    bb = load_backbone("teaching")
    report = {"task": task.name, "shots": a.shots, "episodes": a.episodes, "split": a.split, "methods": {}}
    for name in a.methods.split(","):
        m = build(bb, name, task.name, a.shots)
        row = caption_events(m, task, a.shots if m.uses_demos else 0, a.episodes, a.split)
        k = row["shots"]
        print(f"{name:12s} k={k}  exact {row['exact']:.3f}  events right/demo/other "
              f"{row['events']['right']:.3f}/{row['events']['from a demo']:.3f}/{row['events']['other']:.3f} (actor right {row['events']['right actor, wrong action']:.3f})  "
              f"same #events {row['same_event_count']:.3f}  whole demo answer {row['repeats_a_whole_demo_answer']:.3f}")
        report["methods"][name] = row
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
