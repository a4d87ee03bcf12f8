"""shapes-vqa accuracy of teaching VLMs by question type (colour / shape / size / count / position).

    python scripts/vqa_by_question_type.py assets/teaching-vlm runs/v3c-seed1 [--episodes 200] [--shots 0]

Test split, evaluation seed 0 (the same queries as `mmict eval --task shapes-vqa`), exact match after
stripping.  One JSON line per model.
"""
from __future__ import annotations

import argparse
import collections
import json

import torch


def by_type(path: str, episodes: int, shots: int) -> dict:
    from mmict_core.backbones import TeachingVLM
    from mmict_core.data import make_episode

    vlm = TeachingVLM.load(path)
    vlm.model.eval()
    eps = [make_episode("shapes-vqa", shots, seed=0, index=i, split="test", pool_size=max(shots, 1))
           for i in range(episodes)]
    hits = collections.defaultdict(list)
    for s in range(0, episodes, 50):
        with torch.no_grad():
            outs = vlm.generate(eps[s:s + 50], max_new_tokens=8)
        for ep, o in zip(eps[s:s + 50], outs):
            hits[ep.query.meta.get("qtype", "?")].append(o.strip() == ep.query.answer.strip())
    return {"model": path, "shots": shots, **{t: {"n": len(v), "accuracy": round(sum(v) / len(v), 3)}
                                               for t, v in sorted(hits.items())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--shots", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for m in a.models:
        print(json.dumps(by_type(m, a.episodes, a.shots)), flush=True)


if __name__ == "__main__":
    main()
