"""Probe: why MTV does not improve with more demonstrations on the fixed binding (section 4 of the benchmark
report: MTV reading 8 / 16 / 32 demos in 1 / 2 / 4 prompts of 8).

On the section's own test episodes (fixed binding, 32 demonstrations, seed 0, as ``evaluate_generation`` draws
them), MTV with prompts of 8 and 1, 2 or 4 of them (8, 16, 32 demos read): for each, how often its answer is
the answer of one of its prompts' dummy queries (the last demo of each prompt), how often the gold answer is
one of them, and the accuracy of plainly copying a dummy answer (the first prompt's; the most frequent one).
If MTV's vector carried the binding (the task), its answers would follow the query; if it carries the dummy
queries' answers (the output), its answers follow the dummies and its accuracy tracks the copy baselines.

    python scripts/probe_mtv_many_shot.py [--episodes 300] [--json benchmarks/results/probes/mtv_many_shot.json]
"""
from __future__ import annotations

import argparse
import json
from collections import Counter

SHOTS, PER_CONTEXT = 32, 8


def dummy_answers(demo_answers: list[str], per_context: int, contexts: int) -> list[str]:
    """The answers of the dummy queries of the first ``contexts`` prompts of ``per_context`` demos (the last
    demo of each consecutive chunk), as ``methods.vectors.dummy_query_contexts`` builds them."""
    return [demo_answers[(j + 1) * per_context - 1] for j in range(contexts)]


def shares(preds: list[str], golds: list[str], dummies: list[list[str]]) -> dict:
    """Accuracy, and how answers relate to the dummy queries' answers (all as shares of the episodes)."""
    n = len(golds)
    norm = [p.strip().lower() for p in preds]
    golds = [g.lower() for g in golds]
    dummies = [[d.lower() for d in ds] for ds in dummies]
    first = [ds[0] for ds in dummies]
    major = [Counter(ds).most_common(1)[0][0] for ds in dummies]  # ties: the earliest prompt's
    return {"accuracy": sum(p == g for p, g in zip(norm, golds)) / n,
            "answer_is_a_dummy_answer": sum(p in ds for p, ds in zip(norm, dummies)) / n,
            "gold_is_a_dummy_answer": sum(g in ds for g, ds in zip(golds, dummies)) / n,
            "copy_first_dummy_accuracy": sum(f == g for f, g in zip(first, golds)) / n,
            "copy_majority_dummy_accuracy": sum(m == g for m, g in zip(major, golds)) / n,
            "answer_is_first_dummy": sum(p == f for p, f in zip(norm, first)) / n}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=300)
    p.add_argument("--batch", type=int, default=25)
    p.add_argument("--json")
    a = p.parse_args(argv)

    import torch
    from tqdm import tqdm

    from mmict_core.backbones import load_backbone
    from mmict_core.data import get_task, make_episode
    from mmict_core.methods import create_method

    torch.set_num_threads(1)
    bb = load_backbone("teaching")
    t = get_task("binding", fixed_binding=True)
    eps = [make_episode(t, SHOTS, seed=0, index=i, split="test", pool_size=max(t.default_pool_size, SHOTS))
           for i in range(a.episodes)]
    golds = [e.query.answer for e in eps]
    out = {"task": "binding (fixed)", "episodes": a.episodes, "shots": SHOTS, "per_context": PER_CONTEXT,
           "backbone": bb.fingerprint(), "by_prompts": {}}
    for contexts in tqdm((1, 2, 4), desc="prompts"):
        m = create_method("mtv", bb, shots=SHOTS, per_context=PER_CONTEXT, contexts=contexts)
        preds = []
        for s in range(0, a.episodes, a.batch):
            preds += m.generate(eps[s:s + a.batch], max_new_tokens=4)
        dummies = [dummy_answers([d.answer for d in e.demos], PER_CONTEXT, contexts) for e in eps]
        out["by_prompts"][contexts] = {k: round(v, 3) for k, v in shares(preds, golds, dummies).items()}
        out["by_prompts"][contexts]["demos_read"] = contexts * PER_CONTEXT
    print(json.dumps(out, indent=1))
    if a.json:
        from pathlib import Path

        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
