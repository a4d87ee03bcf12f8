"""Diagnosis, not a claim: can VanillaFT learn the downstream tasks at all, and at what budget?

Run after the pre-registered baseline (docs/tasks/downstream.md) found VanillaFT near 0 at the
starter budget (600 steps, lr 1e-3 x lr_scale 0.1).  Seed 0, the same 1,000 training queries, the
same held-out test episodes (the first N of seed 0); only steps and lr_scale vary, and only for
VanillaFT — no MMICT or VanillaICT number is produced here.

    python scripts/probe_vanilla_ft_budget.py --out runs/probe-ft
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

GRID = [(600, 0.1), (3000, 0.1), (600, 1.0), (3000, 1.0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="ft-vqa,ft-caption")
    ap.add_argument("--episodes", type=int, default=150)
    ap.add_argument("--out", default="runs/probe-ft")
    a = ap.parse_args()
    from mmict_core.backbones import load_backbone
    from mmict_core.casestudy import StarterEntry, starter_train_config
    from mmict_core.data import get_task
    from mmict_core.evaluate.icl import evaluate_generation
    from mmict_core.methods import get_method
    from mmict_core.train import train

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    bb = load_backbone("teaching")
    cls = get_method("vanilla-ft")
    for task in a.tasks.split(","):
        for steps, scale in GRID:
            path = out / f"{task}.steps{steps}.scale{scale}.json"
            if path.exists():
                continue
            m = cls(bb, cls.config_class(seed=0, lr_scale=scale))
            tc = starter_train_config(StarterEntry(task, "vanilla-ft"), 0)
            tc.steps = steps
            t0 = time.perf_counter()
            tr = train(m, tc, progress=False)
            r = evaluate_generation(m.generate, get_task(task), [0], episodes=a.episodes, seed=0, progress=False)[0]
            ex = [e for e in r.examples[:3]] if hasattr(r, "examples") else []
            rec = {"task": task, "steps": steps, "lr_scale": scale, "seconds": round(time.perf_counter() - t0, 1),
                   "final_loss": sum(tr.losses[-50:]) / len(tr.losses[-50:]), "accuracy": r.accuracy, **r.extra}
            path.write_text(json.dumps(rec))
            print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
