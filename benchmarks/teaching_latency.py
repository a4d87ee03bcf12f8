"""Per-query latency of a 0-shot query on two teaching VLMs, interleaved in one run (the Teaching
world v2 goal: a new checkpoint's 0-shot query within 1.2x of the shipped one's).

    python -m benchmarks.teaching_latency CANDIDATE [--base assets/teaching-vlm] [--rounds 40] [--json F]

One query = assemble the episode (image encoding included) and decode a fixed number of tokens,
batch 1, as a user runs it; the two models alternate round by round (``stats.round_robin``), so
machine noise hits both alike.  The ratio is candidate / base of the medians.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.common import fresh_method, query_fn
from benchmarks.provenance import checkpoint, git_state, machine
from benchmarks.stats import Goal, ratio, round_robin, summarize
from mmict_core.backbones import TeachingVLM
from mmict_core.data import make_episode

GOAL = 1.2


def seconds(fn):
    """A round-robin task: time query ``fn(round)``."""

    def task(r: int) -> float:
        t0 = time.perf_counter()
        fn(r)
        return time.perf_counter() - t0

    return task


def measure(candidate: str, base: str, task: str = "shapes-vqa", rounds: int = 40, episodes: int = 8,
            new_tokens: int = 4) -> dict:
    eps = [make_episode(task, 0, seed=0, index=i, split="test") for i in range(episodes)]
    runs = {}
    for label, path in (("base", base), ("candidate", candidate)):
        vlm = TeachingVLM.load(path)
        vlm.model.requires_grad_(False)
        vlm.model.eval()
        runs[label] = query_fn(vlm, fresh_method(vlm, "icl"), eps, new_tokens)
    times = round_robin({k: seconds(fn) for k, fn in runs.items()}, rounds)
    s = {k: summarize(v) for k, v in times.items()}
    value = ratio(s["candidate"]["median"], s["base"]["median"])
    goal = Goal(f"0-shot {task} per-query latency: candidate / base (median)", value, "<=", GOAL,
                f"{s['candidate']['median'] * 1e3:.1f} vs {s['base']['median'] * 1e3:.1f} ms; {rounds} interleaved rounds")
    return {"task": task, "candidate": checkpoint(Path(candidate)), "base": checkpoint(Path(base)),
            "git": git_state(), "machine": machine(), "rounds": rounds, "episodes": episodes,
            "new_tokens": new_tokens, "torch_threads": torch.get_num_threads(), "query_s": s,
            "ratio_median": value, "ratio_min": ratio(s["candidate"]["min"], s["base"]["min"]), "goal": goal.as_dict()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("candidate", help="the new checkpoint's folder")
    ap.add_argument("--base", default="assets/teaching-vlm", help="the reference checkpoint (default: the shipped one)")
    ap.add_argument("--task", default="shapes-vqa", help="a task both models know (default shapes-vqa)")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = measure(a.candidate, a.base, a.task, a.rounds)
    print(Goal(**{k: out["goal"][k] for k in ("name", "value", "op", "threshold", "detail")}).line())
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
