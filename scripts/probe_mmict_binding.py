"""Probe: what MMICT does on per-episode binding (analysis only; issue 18 asks each result to be explained).

With the starter library's ``binding.mmict`` and ``binding.vanilla-ict`` adapters at 4 demonstrations, on held-out
per-episode binding test episodes (seed 0), each answer is classed as the query's word, the other word the
demonstrations show, or a word they do not show (:func:`classify`).  Then the M-Hub premise probe
(``mmict_core.teaching.hub.mhub_probe``: linear read-out of a binding demo's colour and shape from its Q-Former
text-token outputs, the features MMICT feeds the LM) on the bare checkpoint and with MMICT's trained Q-Former.

    python scripts/probe_mmict_binding.py [--episodes 150] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
from collections import Counter


def classify(output: str, gold: str, shown: set[str]) -> str:
    """'gold' (the query's word), 'other shown' (a word of the demonstrations, not the query's) or 'not shown'."""
    word = output.strip().lower()
    if word == gold.lower():
        return "gold"
    return "other shown" if word in {w.lower() for w in shown} else "not shown"


def answer_classes(method, episodes) -> dict[str, float]:
    """Share of each :func:`classify` class over ``episodes`` (one generate pass)."""
    outs = method.generate(episodes)
    counts = Counter(classify(o, ep.query.answer, {d.answer for d in ep.demos}) for o, ep in zip(outs, episodes))
    return {c: round(counts[c] / len(episodes), 3) for c in ("gold", "other shown", "not shown")}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=150)
    p.add_argument("--probe-scenes", type=int, default=900)
    p.add_argument("--json")
    a = p.parse_args(argv)

    from mmict_core.backbones import load_backbone
    from mmict_core.casestudy import method_for
    from mmict_core.data import make_episode
    from mmict_core.teaching.hub import mhub_probe

    bb = load_backbone("teaching")
    eps = [make_episode("binding", 4, seed=0, index=i, split="test") for i in range(a.episodes)]
    out = {"episodes": a.episodes, "shots": 4}
    for name in ("vanilla-ict", "mmict"):
        out[name] = answer_classes(method_for(bb, name, "binding"), eps)
    mm = method_for(bb, "mmict", "binding")
    out["mhub_probe_bare"] = mhub_probe(bb, n=a.probe_scenes)
    with mm.attached():
        out["mhub_probe_mmict_trained"] = mhub_probe(bb, n=a.probe_scenes)
    print(json.dumps(out))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
