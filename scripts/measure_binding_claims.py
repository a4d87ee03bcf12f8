"""HiFICL's and M2IV's claims on fixed binding, 3 seeds (issue 18's claims list; the papers' own
protocol: the adapter reads the query alone, plain ICL reads 8 demonstrations).

    HiFICL at 0 demos >= 8-shot ICL          M2IV (8-shot teacher) at 0 demos >= 8-shot ICL

Each adapter is trained with the starter library's adapter budget (casestudy.STARTER_TRAIN["adapter"]:
2,000 steps, lr 5e-3, batch 8, 1,000 samples, half of each batch fixed binding) from seeds 0, 1, 2
and scored on the same 300 held-out fixed-binding test episodes (seed 0); ICL needs no training.
One JSON per run under OUT (resumes); ``--summary`` prints the table and verdicts.

    python scripts/measure_binding_claims.py --out benchmarks/results/claims/binding
    python scripts/measure_binding_claims.py --summary --out benchmarks/results/claims/binding
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SEEDS = (0, 1, 2)
EPISODES = 300
ICL_SHOTS = 8
METHODS = ("hificl", "m2iv")


def run(bb, method: str, seed: int, out: Path) -> dict:
    from mmict_core.casestudy import StarterEntry, starter_train_config, train_command
    from mmict_core.data import get_task
    from mmict_core.evaluate.claims import wilson_interval
    from mmict_core.evaluate.icl import evaluate_generation
    from mmict_core.methods import create_method
    from mmict_core.train import train

    path = out / f"binding-fixed.{method}.seed{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    task = get_task("binding", fixed_binding=True)
    rec: dict = {"task": "binding (fixed)", "method": method, "seed": seed, "episodes": EPISODES}
    if method == "icl":
        m = create_method("icl", bb)
        r = evaluate_generation(m.generate, task, [ICL_SHOTS], episodes=EPISODES, seed=0, progress=False)[0]
        rec.update(shots=ICL_SHOTS, accuracy=r.accuracy)
    else:
        m = create_method(method, bb, seed=seed)
        entry = StarterEntry("binding", method, fixed_binding=True)
        tc = starter_train_config(entry, seed)
        t0 = time.perf_counter()
        tr = train(m, tc, progress=True)
        r = evaluate_generation(m.generate, task, [0], episodes=EPISODES, seed=0, progress=False)[0]
        rec.update(shots=0, accuracy=r.accuracy, command=train_command(entry, seed),
                   train_seconds=round(time.perf_counter() - t0, 1), final_loss=tr.losses[-1])
    rec["wilson95"] = list(wilson_interval(rec["accuracy"] * EPISODES, EPISODES))
    path.write_text(json.dumps(rec, indent=1))
    print(json.dumps(rec), flush=True)
    return rec


def summary(out: Path) -> str:
    from mmict_core.evaluate.claims import summarize_seeds, verdict_ge

    def load(method):
        return [json.loads(p.read_text()) for p in sorted(out.glob(f"binding-fixed.{method}.seed*.json"))]

    icl = load("icl")
    lines = ["| method | demos read | fixed-binding accuracy, mean [95% t-interval over seeds] | per seed |", "|---|---|---|---|"]
    if icl:
        lines.append(f"| ICL | {ICL_SHOTS} | {icl[0]['accuracy']:.3f} (no training) | |")
    verdicts = []
    for method in METHODS:
        recs = load(method)
        if not recs:
            continue
        s = summarize_seeds([r["accuracy"] for r in recs])
        per_seed = ", ".join(f"{r['accuracy']:.3f}" for r in recs)
        lines.append(f"| {method} | 0 | {s.mean:.3f} [{s.lo:.3f}, {s.hi:.3f}] | {per_seed} |")
        if icl and s.n == len(SEEDS):
            v = verdict_ge(s, summarize_seeds([icl[0]["accuracy"]]))
            verdicts.append(f"- {method} at 0 demos >= {ICL_SHOTS}-shot ICL: **{v}**")
    return "\n".join(lines + [""] + verdicts)


BEGIN, END = "<!-- binding-claim -->", "<!-- /binding-claim -->"


def readme_block(out: Path) -> str:
    """The README's block, made from the per-run JSON under ``out``."""
    return ("**HiFICL's and M2IV's claims in their own setting** — fixed binding, the adapter reading the query "
            f"alone against {ICL_SHOTS}-shot ICL; {EPISODES} held-out episodes, seeds {', '.join(map(str, SEEDS))}, "
            "the starter library's adapter budget (2,000 steps, lr 5e-3); made by "
            "`python scripts/measure_binding_claims.py` (in `scripts/claims.sh`) from the JSON in "
            "`benchmarks/results/claims/binding/`:\n\n" + summary(out))


def write_readme(out: Path, readme: Path = Path("README.md"), check: bool = False) -> bool:
    from mmict_core.evaluate.claims import write_marked_block

    return write_marked_block(readme, BEGIN, END, readme_block(out), check=check)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results/claims/binding")
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--readme", action="store_true", help="rewrite the README's block from the JSON in --out")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if not a.summary:
        from mmict_core.backbones import load_backbone

        bb = load_backbone("teaching")
        run(bb, "icl", 0, out)
        for seed in SEEDS:
            for method in METHODS:
                run(bb, method, seed, out)
    print(summary(out))
    if a.readme:
        write_readme(out)


if __name__ == "__main__":
    main()
