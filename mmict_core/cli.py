"""`mmict` — the command line: pretrain-teaching, eval, demo, tasks."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

STRATEGY_CHOICES = ("random", "similarity", "balanced")


def _int_list(text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers like 0,1,2,4,8, got {text!r}")
    if not vals or any(v < 0 for v in vals):
        raise argparse.ArgumentTypeError(f"shot counts must be whole numbers >= 0, got {text!r}")
    return vals


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def format_table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    line = "  ".join(c.ljust(widths[c]) for c in columns)
    sep = "  ".join("-" * widths[c] for c in columns)
    body = ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join([line, sep, *body])


def run_eval(args: argparse.Namespace) -> list[dict]:
    from .backbones import load_backbone
    from .data import get_task
    from .evaluate.icl import evaluate_icl

    tasks = [t.strip() for t in args.task.split(",") if t.strip()]
    task_objs = [get_task(t) for t in tasks]  # fail fast on unknown names, before loading the model
    t0 = time.time()
    backbone = load_backbone(args.backbone, quant=args.quant)
    load_s = time.time() - t0
    reports = []
    for task in task_objs:
        res = evaluate_icl(backbone, task.name, args.shots, episodes=args.episodes, seed=args.seed,
                           selection=args.selection, batch_size=args.batch_size, progress=not args.quiet)
        report = {"task": task.name, "method": "icl", "quant": args.quant, "selection": args.selection,
                  "seed": args.seed, "chance": round(task.chance, 4), "chance_note": task.chance_note,
                  "results": [{"shots": r.shots, "accuracy": round(r.accuracy, 4), "n": r.n} for r in res]}
        reports.append(report)
        print(f"\n{task.name}  (method icl, quant {args.quant}, selection {args.selection}, "
              f"chance {task.chance:.3f}: {task.chance_note})")
        print(format_table([{"shots": r.shots, "accuracy": f"{r.accuracy:.3f}", "n": r.n} for r in res], ["shots", "accuracy", "n"]))
    print(f"\n(backbone loaded in {load_s:.1f}s; total {time.time() - t0:.1f}s)")
    if args.json:
        out = reports[0] if len(reports) == 1 else reports
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    return reports


def cmd_pretrain(args: argparse.Namespace) -> None:
    from .backbones.pretrain import PretrainConfig, pretrain_teaching

    cfg = PretrainConfig(seed=args.seed, steps=args.steps, vision_steps=args.vision_steps, batch=args.batch,
                         eval_every=args.eval_every)
    summary = pretrain_teaching(args.out, cfg)
    print(f"saved to {args.out} in {summary['wall_seconds'] / 60:.1f} min")


def cmd_tasks(args: argparse.Namespace) -> None:
    from .data import get_task, task_names

    rows = []
    for n in task_names():
        t = get_task(n)
        rows.append({"task": n, "needs demos": "yes" if t.needs_demos else "no", "chance": f"{t.chance:.3f}",
                     "description": t.description})
    print(format_table(rows, ["task", "needs demos", "chance", "description"]))


def cmd_demo(args: argparse.Namespace) -> None:
    """Until the app lands: the ICL evaluation of the teaching VLM on every task, small."""
    ns = argparse.Namespace(task="shapes-vqa,binding,format,operator", shots=[0, 1, 2, 4, 8], episodes=args.episodes,
                            seed=0, quant="none", selection="random", json=None, backbone=None, batch_size=64,
                            quiet=False)
    run_eval(ns)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmict", description="MMICT Studio: multimodal in-context learning and tuning")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("eval", help="k-shot ICL evaluation on held-out episodes")
    e.add_argument("--task", required=True, help="task name, or several separated by commas (see `mmict tasks`)")
    e.add_argument("--shots", type=_int_list, default=[0, 1, 2, 4, 8], help="comma-separated shot counts")
    e.add_argument("--episodes", type=_positive, default=300)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--quant", choices=("none", "8bit", "4bit"), default="none")
    e.add_argument("--selection", choices=STRATEGY_CHOICES, default="random")
    e.add_argument("--backbone", default=None, help="teaching-VLM folder (default: the shipped one)")
    e.add_argument("--batch-size", type=_positive, default=32)
    e.add_argument("--json", default=None, help="write the results here")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=run_eval)

    t = sub.add_parser("pretrain-teaching", help="reproduce the teaching VLM from a seed")
    t.add_argument("--out", required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--steps", type=int, default=5000)
    t.add_argument("--vision-steps", type=int, default=800)
    t.add_argument("--batch", type=_positive, default=16)
    t.add_argument("--eval-every", type=int, default=500)
    t.set_defaults(func=cmd_pretrain)

    k = sub.add_parser("tasks", help="list the tasks and their chance levels")
    k.set_defaults(func=cmd_tasks)

    d = sub.add_parser("demo", help="the main job (README): evaluate the teaching VLM on every task")
    d.add_argument("--episodes", type=_positive, default=100)
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    from .data import ImageError

    try:
        args.func(args)
    except (ValueError, FileNotFoundError, ImageError) as exc:
        print(f"mmict {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
