"""Probe: why does MimIC on fixed binding learn less on one checkpoint than on another?  (Analysis only.)

Trains the starter library's ``binding-fixed.mimic`` entry (``casestudy.starter_train_config``) on
``--backbone``, with optional changes to MimIC's loss weights or the learning rate, and prints one JSON
line: held-out 0-demo accuracy of the adapter, the 4-shot teacher's accuracy on the same episodes (what
MimIC imitates), the mean CE and alignment parts over the first and last 10% of the steps, the
alignment loss of the untrained adapter (the teacher-student gap with no shift, i.e. the scale of the
alignment term), and the mean gate mu per layer over the student's tokens.

    python scripts/probe_mimic_fixed.py --backbone assets/teaching-vlm [--ce-weight 0.5 --align-weight 1 --lr 5e-3]
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="teaching")
    p.add_argument("--steps", type=int, default=None, help="default: the starter library's")
    p.add_argument("--lr", type=float, default=None, help="default: the starter library's")
    p.add_argument("--align-weight", type=float, default=None)
    p.add_argument("--ce-weight", type=float, default=None)
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    from dataclasses import replace

    from mmict_core.backbones import load_backbone
    from mmict_core.casestudy import StarterEntry, starter_train_config
    from mmict_core.data import get_task
    from mmict_core.evaluate.icl import evaluate_generation
    from mmict_core.methods import create_method
    from mmict_core.train import train

    bb = load_backbone(a.backbone)
    over = {k: v for k, v in (("align_weight", a.align_weight), ("ce_weight", a.ce_weight)) if v is not None}
    method = create_method("mimic", bb, seed=a.seed, **over)
    tc = starter_train_config(StarterEntry("binding", "mimic", fixed_binding=True), a.seed)
    tc = replace(tc, **{k: v for k, v in (("steps", a.steps), ("lr", a.lr)) if v is not None})
    task = get_task("binding", fixed_binding=True)
    from mmict_core.data import make_episode

    probe_eps = [make_episode(task, method.config.train_shots, seed=a.seed, index=i, split="train", pool_size=4)
                 for i in range(16)]
    with torch.no_grad():
        _, parts0 = method.loss(probe_eps)  # the untrained adapter (shift ~ 0): the alignment term's scale
    teacher = evaluate_generation(bb.generate, task, [method.config.train_shots], episodes=a.episodes, seed=a.seed,
                                  progress=False)[0]
    t0 = time.time()
    res = train(method, tc, progress=False)
    ev = evaluate_generation(method.generate, task, [0], episodes=a.episodes, seed=a.seed, progress=False)[0]
    with torch.no_grad(), method.capture() as cap:
        method.loss(probe_eps)
    mu = [round(float(cap[l][1].mean()), 4) for l in sorted(cap)]
    n = max(1, len(res.parts) // 10)

    def mean(part, rows):
        return round(sum(r[part] for r in rows) / len(rows), 4)

    print(json.dumps({
        "backbone": a.backbone, "config": {"lr": tc.lr, "steps": tc.steps, **over},
        "accuracy": round(ev.accuracy, 4), "teacher_4shot": round(teacher.accuracy, 4),
        "align_untrained": round(parts0["align"], 4), "ce_untrained": round(parts0["ce"], 4),
        "first10": {"ce": mean("ce", res.parts[:n]), "align": mean("align", res.parts[:n])},
        "last10": {"ce": mean("ce", res.parts[-n:]), "align": mean("align", res.parts[-n:])},
        "mu_mean_per_layer": mu, "seconds": round(time.time() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
