"""`mmict` — the command line: pretrain-teaching, eval, demo, tasks, train, compare, app, vlibrary, preset."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

STRATEGY_CHOICES = ("random", "similarity", "balanced")
BACKBONE_HELP = ("backbone spec: 'teaching' (default: the shipped teaching VLM), a teaching-VLM folder, a local "
                 "checkpoint folder (InstructBLIP, LLaVA, Idefics2/3, Qwen2-VL/2.5-VL) or a hub id already in the "
                 "local Hugging Face cache (nothing is downloaded)")


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
                           selection=args.selection, batch_size=args.batch_size, progress=not args.quiet,
                           split=args.split)
        report = {"task": task.name, "method": "icl", "quant": args.quant, "selection": args.selection,
                  "split": args.split,
                  "seed": args.seed, "chance": round(task.chance, 4), "chance_note": task.chance_note,
                  "metric": res[0].metric,  # what "accuracy" measures (exact_match, vqa_accuracy, cider, ...)
                  "results": [{"shots": r.shots, "accuracy": round(r.accuracy, 4), "n": r.n,
                               **{k: round(v, 4) for k, v in r.extra.items()}} for r in res]}
        reports.append(report)
        print(f"\n{task.name}  (method icl, metric {res[0].metric}, quant {args.quant}, selection {args.selection}, "
              f"chance {task.chance:.3f}: {task.chance_note})")
        extra = list(res[0].extra)
        print(format_table([{"shots": r.shots, "accuracy": f"{r.accuracy:.3f}", "n": r.n,
                             **{k: f"{v:.3f}" for k, v in r.extra.items()}} for r in res], ["shots", "accuracy", *extra, "n"]))
    print(f"\n(backbone loaded in {load_s:.1f}s; total {time.time() - t0:.1f}s)")
    if args.json:
        out = reports[0] if len(reports) == 1 else reports
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    return reports


def _int_range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition(",")
    try:
        return int(lo), int(hi or lo)
    except ValueError:
        raise SystemExit(f"expected LO,HI integers (e.g. 2,4), got {text!r}") from None


def _parse_mix(text: str) -> dict:
    mix = {}
    for part in text.split(","):
        name, sep, w = part.partition("=")
        try:
            mix[name.strip()] = float(w)
        except ValueError:
            raise SystemExit(f"--mix expects TASK=WEIGHT,... (e.g. binding=0.5,format=0.5), got {part!r}") from None
    total = sum(mix.values())
    if total <= 0:
        raise SystemExit("--mix weights must be positive")
    return {k: v / total for k, v in mix.items()}


PRETRAIN_FLAGS = ("seed", "steps", "vision_steps", "vision_lr", "vision_layers", "vision_intermediate", "hub_steps",
                  "hub_lr", "hub_mlm", "batch", "eval_every", "init_from", "stop_at", "vision_lr_scale", "induction_steps",
                  "induction_lr", "key_loss", "key_layer", "match_loss", "match_layer", "match_head", "copy_loss", "image_norm",
                  "lr", "clip_max_shots", "cell_loss", "cell_batch", "vision_position", "threads")


def pretrain_config_from_args(args: argparse.Namespace):
    """The PretrainConfig a `pretrain-teaching` command line asks for: the recipe's defaults, with
    only the flags that were given changed."""
    from .teaching import PretrainConfig

    kw = {k: getattr(args, k) for k in PRETRAIN_FLAGS if getattr(args, k, None) is not None}
    if args.binding_ways is not None:
        kw["binding_ways"] = _int_range(args.binding_ways)
    if args.answer_marker is not None:
        kw["answer_marker"] = args.answer_marker == "on"
    if args.mix:
        kw["mix"] = _parse_mix(args.mix)
    try:
        return PretrainConfig(**kw)
    except ValueError as e:
        raise SystemExit(f"pretrain-teaching: {e}") from None


def cmd_pretrain(args: argparse.Namespace) -> None:
    from .teaching import pretrain_teaching

    summary = pretrain_teaching(args.out, pretrain_config_from_args(args))
    print(f"saved to {args.out} in {summary['wall_seconds'] / 60:.1f} min")


def cmd_tasks(args: argparse.Namespace) -> None:
    from .data import get_task, task_names

    rows = []
    for n in task_names():
        t = get_task(n)
        rows.append({"task": n, "needs demos": "yes" if t.needs_demos else "no", "chance": f"{t.chance:.3f}",
                     "description": t.description})
    print(format_table(rows, ["task", "needs demos", "chance", "description"]))


def cmd_app(args: argparse.Namespace) -> None:
    try:
        from app.main import launch
    except ImportError as e:
        raise SystemExit(f"the app is not importable ({e}); install the project from its repository: pip install -e .") from e
    print(f"MMICT Studio: loading {args.backbone or 'the teaching VLM'} ({args.quant}) ...", flush=True)
    launch(args.backbone, args.quant, host=args.host, port=args.port, share=args.share, workdir=args.workdir,
           allowed_roots=args.allow_backbone_dir or ())


def cmd_demo(args: argparse.Namespace) -> None:
    """A quick ICL evaluation of the teaching VLM on every task, small."""
    # every field run_eval reads: built from the eval parser's own defaults, so a new eval flag cannot be missed
    ns = build_parser().parse_args(["eval", "--task", "shapes-vqa,binding,format,operator",
                                    "--episodes", str(args.episodes), "--batch-size", "64"])
    ns.quiet = args.quiet
    run_eval(ns)


def _train_config(args: argparse.Namespace, task: str):
    from .train import TrainConfig

    return TrainConfig(task=task, samples=args.samples, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                       loss_on=args.loss_on, mix_fixed=args.mix_fixed, fixed_binding=args.fixed_binding, seed=args.seed)


def cmd_train(args: argparse.Namespace) -> None:
    """Train one method on one task and save the adapter (and, with --vlibrary-name, store it)."""
    from .backbones import load_backbone
    from .evaluate.compare import MethodSpec, build_method, coerce_overrides
    from .methods import get_method
    from .train import train

    cls = get_method(args.method)
    if not cls.needs_training:
        raise ValueError(f"method {args.method!r} has nothing to train; use `mmict eval` or `mmict compare`")
    overrides = coerce_overrides(cls.config_class, args.set or [])
    if args.shots is not None:
        overrides["shots"] = args.shots
    if args.train_shots is not None:
        overrides["train_shots"] = args.train_shots
    from .parallel import is_main, local_device

    tcfg = _train_config(args, args.task)
    # under torchrun / accelerate launch every process trains its slice of each batch on its own device
    backbone = load_backbone(args.backbone, quant=args.quant, device=local_device())
    method = build_method(backbone, MethodSpec(args.method, None, overrides))
    res = train(method, tcfg, out_dir=args.out, resume=args.resume)
    if not is_main():  # one process saves and reports
        return
    method.save(Path(args.out) / "adapter", metadata={"task": args.task, "train_seconds": res.seconds,
                                                       "final_loss": res.losses[-1] if res.losses else None})
    print(f"trained {method.name} ({method.num_trainable():,} parameters) for {res.steps} steps in {res.seconds:.1f}s; "
          f"loss {res.losses[0]:.3f} -> {res.losses[-1]:.3f}; adapter saved to {Path(args.out) / 'adapter'}")


def cmd_compare(args: argparse.Namespace) -> None:
    from .backbones import load_backbone
    from .evaluate.compare import compare, parse_method_specs

    specs = parse_method_specs(args.methods)
    also = [t.strip() for t in (args.also_on or "").split(",") if t.strip()]
    from .parallel import is_main, local_device

    tcfg = _train_config(args, args.task)
    backbone = load_backbone(args.backbone, quant=args.quant, device=local_device())
    rows = compare(backbone, args.task, specs, episodes=args.episodes, seed=args.seed, train_cfg=tcfg,
                   cache_dir=args.cache, also_on=also, fixed_binding=args.fixed_binding)
    if not is_main():  # training was shared; evaluation, the table and the JSON are the main process's
        return
    cols = ["method", "shots", "accuracy", "trainable_params", "train_seconds", "infer_ms"] + [f"acc_{t}" for t in also]
    print(f"\n{args.task} ({args.episodes} held-out episodes, seed {args.seed}, quant {args.quant}"
          f"{', fixed binding' if args.fixed_binding else ''})")
    print(format_table(rows, cols))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        meta = {"episodes": args.episodes, "seed": args.seed, "quant": args.quant, "fixed_binding": args.fixed_binding,
                "steps": tcfg.steps, "backbone": backbone.fingerprint()}
        Path(args.json).write_text(json.dumps({"task": args.task, **meta, "rows": rows}, indent=2))


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", type=_positive, default=1000, help="distinct training queries")
    p.add_argument("--steps", type=_positive, default=200)
    p.add_argument("--batch-size", type=_positive, default=8)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--loss-on", choices=("answer", "full"), default="answer")
    p.add_argument("--mix-fixed", type=float, default=0.0, help="fraction of each batch from the fixed-knowledge tasks")
    p.add_argument("--fixed-binding", action="store_true", help="binding: one binding for training and test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quant", choices=("none", "8bit", "4bit"), default="none")
    p.add_argument("--backbone", default=None, help=BACKBONE_HELP)


def cmd_vlibrary(args: argparse.Namespace) -> None:
    """`mmict vlibrary list|show|search|add|remove`: the on-disk adapter library."""
    from .casestudy import starter_library
    from .vlibrary import VLibrary
    from .vlibrary.view import LibraryView

    own = VLibrary(args.root)
    # your library, then the starter library shipped with the teaching VLM (read-only)
    lib = LibraryView(own, [] if getattr(args, "no_starter", False) else [starter_library()])
    if args.vcommand == "list":
        rows = [{"name": e["name"], "source": e["source"], "method": e["method"], "task": e["task"],
                 "shots": e.get("shots", ""), "params": e.get("num_parameters", ""),
                 "accuracy": f"{e['metrics']['accuracy']:.3f}" if "accuracy" in (e.get("metrics") or {}) else "",
                 "description": e.get("description", "")[:60]} for e in lib.list()]
        print(format_table(rows, ["name", "source", "method", "task", "shots", "params", "accuracy", "description"])
              if rows else f"(the library at {own.root} is empty)")
    elif args.vcommand == "show":
        print(json.dumps(lib.show(args.name), indent=2))
    elif args.vcommand == "search":
        hits = lib.search_text(args.text, top_k=args.top)
        print(format_table([{"name": n, "score": f"{s:.3f}"} for n, s in hits], ["name", "score"]) if hits
              else f"no entry matches {args.text!r}")
    elif args.vcommand == "add":
        try:
            metrics = json.loads(args.metrics) if args.metrics else None
        except json.JSONDecodeError as exc:
            raise ValueError(f"--metrics must be a JSON object like '{{\"accuracy\": 0.8}}' ({exc})") from exc
        if metrics is not None and not isinstance(metrics, dict):
            raise ValueError("--metrics must be a JSON object like '{\"accuracy\": 0.8}'")
        from .vlibrary import LibraryError

        try:
            if args.name in lib.shared_names():
                raise LibraryError(f"{args.name!r} is an entry of the read-only starter library; choose another name")
            e = own.add_folder(args.name, args.source, task=args.task, description=args.description, shots=args.shots,
                               samples=args.samples, metrics=metrics, overwrite=args.overwrite)
        except LibraryError as exc:  # the library's wording is the Python API's; on the command line it is a flag
            raise LibraryError(str(exc).replace("pass overwrite=True", "add --overwrite")) from exc
        print(f"added {e['name']} ({e['method']}, {e['num_parameters']} parameters) to {own.root}")
    elif args.vcommand == "remove":
        lib.remove(args.name)
        print(f"removed {args.name} from {own.root}")


def cmd_case_study(args: argparse.Namespace) -> None:
    """`mmict case-study`: the MMICT paper's Figure 3 on one query, with accuracy over N episodes."""
    from .backbones import load_backbone
    from .casestudy import CASE_METHODS, resolve_task, run_case_study, save_case_study_files, starter_library

    methods = [m.strip() for m in (args.methods or ",".join(CASE_METHODS)).split(",") if m.strip()]
    from .methods import get_method

    for m in methods:
        get_method(m)  # unknown names fail before the model loads
    bb = load_backbone(args.backbone, quant=args.quant)
    lib = starter_library(args.library) if args.library else None
    t0 = time.time()
    case = run_case_study(bb, resolve_task(args.task), methods, shots=args.shots, episodes=args.episodes,
                          seed=args.seed, index=args.index, library=lib, fixed_binding=args.fixed_binding,
                          progress=not args.quiet)
    q = case.query
    print(f"{case.task}: {q['prompt']}  (reference: {q['answer']}; {q['frames']} frame(s), {q['shots']} demos)")
    print(format_table([{"method": r["method"], "shots": r["shots"], "output": r["output"],
                         "correct": "yes" if r["correct"] else "no"} for r in case.rows],
                       ["method", "shots", "output", "correct"]))
    print(f"\naccuracy over {args.episodes} held-out episodes (seed {args.seed}), 95% Wilson interval:")
    print(format_table([{"method": a["method"], "accuracy": f"{a['accuracy']:.3f}",
                         "ci95": f"[{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]", "n": a["n"]} for a in case.accuracy],
                       ["method", "accuracy", "ci95", "n"]))
    print(f"({time.time() - t0:.1f} s)")
    if args.png or args.html:
        save_case_study_files(case, args.png, args.html)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(case.as_dict(), indent=2))


def cmd_starter_library(args: argparse.Namespace) -> None:
    from .backbones import load_backbone
    from .casestudy import STARTER_DIR, STARTER_ENTRIES, build_starter_library

    only = [x.strip() for x in args.only.split(",") if x.strip()] if args.only else None
    unknown = sorted(set(only or ()) - {e.name for e in STARTER_ENTRIES})
    if unknown:
        raise SystemExit(f"unknown starter-library entries: {', '.join(unknown)}; "
                         f"the entries are: {', '.join(e.name for e in STARTER_ENTRIES)}")
    # a library lives beside the checkpoint it was trained on: another teaching folder gets <folder>/library
    out = args.out or (STARTER_DIR if args.backbone in (None, "teaching") else Path(args.backbone) / "library")
    bb = load_backbone(args.backbone) if args.backbone not in (None, "teaching") else None
    build_starter_library(out, seed=args.seed, only=only, episodes=args.episodes, backbone=bb)


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
    e.add_argument("--backbone", default=None, help=BACKBONE_HELP)
    e.add_argument("--batch-size", type=_positive, default=32)
    e.add_argument("--split", choices=["test", "val"], default="test",
                   help="held-out episodes to score: test (reported numbers) or val (for choosing among checkpoints)")
    e.add_argument("--json", default=None, help="write the results here")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=run_eval)

    cs = sub.add_parser("case-study", help="one query through VanillaFT / VanillaICT / MMICT (starter library) "
                                           "and their accuracy over N held-out episodes with 95%% intervals")
    cs.add_argument("--task", required=True, help="a case-study type (vqa, caption, video-qa, video-caption, binding) or a task")
    cs.add_argument("--methods", default=None, help="comma-separated methods (default: vanilla-ft,vanilla-ict,mmict)")
    cs.add_argument("--shots", type=int, default=4, help="demonstrations for the methods that read them")
    cs.add_argument("--episodes", type=_positive, default=50, help="held-out episodes for the accuracy table")
    cs.add_argument("--seed", type=int, default=0)
    cs.add_argument("--index", type=int, default=0, help="which test episode is the shown query")
    cs.add_argument("--fixed-binding", action="store_true", help="binding with one fixed binding (its adapters)")
    cs.add_argument("--library", default=None, help="adapter library (default: the starter library)")
    cs.add_argument("--backbone", default=None, help=BACKBONE_HELP)
    cs.add_argument("--quant", choices=("none", "8bit", "4bit"), default="none")
    cs.add_argument("--png", default=None)
    cs.add_argument("--html", default=None)
    cs.add_argument("--json", default=None)
    cs.add_argument("--quiet", action="store_true")
    cs.set_defaults(func=cmd_case_study)

    sl = sub.add_parser("starter-library", help="rebuild the starter library of trained adapters from a seed")
    sl.add_argument("--out", default=None, help="library folder (default: assets/teaching-vlm/library)")
    sl.add_argument("--seed", type=int, default=0)
    sl.add_argument("--only", default=None, help="comma-separated entry names to (re)build")
    sl.add_argument("--episodes", type=_positive, default=100, help="held-out episodes for each entry's accuracy")
    sl.add_argument("--backbone", default=None,
                    help="teaching-VLM folder to train on (default: the shipped one); its library goes to "
                         "<folder>/library unless --out is given")
    sl.set_defaults(func=cmd_starter_library)

    t = sub.add_parser("pretrain-teaching", help="train the teaching VLM from scratch (the shipped recipe; flags only for experiments)")
    t.add_argument("--out", required=True)
    t.add_argument("--seed", type=int, default=0)
    rec = t.add_argument_group("experiments (default: the shipped recipe, mmict_core.teaching.PretrainConfig)")
    rec.add_argument("--steps", type=int, default=None, help="episode-stage steps")
    rec.add_argument("--vision-steps", type=int, default=None,
                     help="vision-stage steps (default: the recipe's from scratch, none when continuing with --init-from)")
    rec.add_argument("--vision-lr", type=float, default=None, help="peak lr of the vision stage")
    rec.add_argument("--vision-layers", type=int, default=None, help="ViT layers (a continuation grows its ViT to this)")
    rec.add_argument("--vision-intermediate", type=int, default=None, help="ViT MLP width (a continuation grows to this)")
    rec.add_argument("--hub-steps", type=int, default=None, help="M-Hub text-path stage steps (ITG + ITM)")
    rec.add_argument("--hub-lr", type=float, default=None, help="peak lr of the M-Hub text-path stage")
    rec.add_argument("--hub-mlm", type=float, default=None,
                     help="weight of the M-Hub stage's masked-answer loss (bidirectional text outputs; 0: off)")
    rec.add_argument("--batch", type=_positive, default=None, help="episodes per step")
    rec.add_argument("--eval-every", type=int, default=None, help="probe + snapshot every N episode steps")
    rec.add_argument("--init-from", default=None, help="continue from this teaching-VLM folder (no vision / hub stage unless asked)")
    rec.add_argument("--lr", type=float, default=None, help="peak learning rate of the episode stage")
    rec.add_argument("--mix", default=None, help="task mix TASK=WEIGHT,... (normalised)")
    rec.add_argument("--stop-at", type=int, default=None, help="stop after N steps of the --steps schedule (a snapshot mid-schedule)")
    rec.add_argument("--binding-ways", default=None, help="LO,HI: n_way of training binding episodes")
    rec.add_argument("--clip-max-shots", type=int, default=None, help="demonstrations per clip training episode")
    rec.add_argument("--answer-marker", choices=["on", "off"], default=None,
                     help="off: each answer right after its image tokens, no <answer> marker")
    rec.add_argument("--induction-steps", type=int, default=None,
                     help="text-only associative-recall steps for the LM before the episodes (experimental)")
    rec.add_argument("--induction-lr", type=float, default=None, help="peak lr of the induction stage")
    rec.add_argument("--key-loss", type=float, default=None,
                     help="weight of the auxiliary binding-key loss: a throw-away head reads each binding item's "
                          "colour at its answer marker and first answer position (0: off)")
    rec.add_argument("--key-layer", type=int, default=None, help="LM layer whose output the key loss reads")
    rec.add_argument("--match-loss", type=float, default=None,
                     help="weight of the binding-match attention loss: one head's attention from each predictable "
                          "binding answer's prediction position should fall on earlier answers of the same colour (0: off)")
    rec.add_argument("--match-layer", type=int, default=None, help="decoder layer (0-based) of the supervised head")
    rec.add_argument("--match-head", type=int, default=None, help="the supervised head")
    rec.add_argument("--copy-loss", type=float, default=None,
                     help="weight of the binding-copy loss: that head's own output, read through lm_head, should "
                          "name the word it attends to (0: off)")
    rec.add_argument("--vision-position", type=float, default=None,
                     help="weight of the vision stage's per-patch row / column loss (the ViT keeps where each patch is; 0: off)")
    rec.add_argument("--cell-loss", type=float, default=None,
                     help="weight of the per-cell read-out loss: a linear head must read every cell's shape, colour "
                          "and size from the image tokens, in the hub and episode stages (0: off)")
    rec.add_argument("--cell-batch", type=int, default=None, help="fresh scenes per step for --cell-loss")
    rec.add_argument("--vision-lr-scale", type=float, default=None, help="episode-stage lr of the vision encoder relative to --lr")
    rec.add_argument("--image-norm", type=float, default=None,
                     help="rescale the projection so image tokens have this mean norm before the episode stage")
    rec.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    t.set_defaults(func=cmd_pretrain)

    tr = sub.add_parser("train", help="train one method on one task and save the adapter")
    tr.add_argument("--method", required=True, help="a trainable method (see `mmict compare --help`)")
    tr.add_argument("--task", required=True)
    tr.add_argument("--out", required=True, help="output folder (adapter/, checkpoint/, train_log.json)")
    tr.add_argument("--shots", type=int, default=None, help="demonstrations at inference (methods that use demos)")
    tr.add_argument("--train-shots", type=int, default=None, help="demonstrations per training episode / teacher context")
    tr.add_argument("--set", action="append", metavar="FIELD=VALUE", help="method config field, e.g. --set rank=4")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    _add_train_args(tr)
    tr.set_defaults(func=cmd_train)

    c = sub.add_parser("compare", help="train what is not trained yet and compare methods on the same held-out episodes")
    c.add_argument("--task", required=True)
    c.add_argument("--methods", required=True, help="e.g. icl:8,vanilla-ft,vanilla-ict,mmict,hificl,mimic,live,lora,m2iv")
    c.add_argument("--episodes", type=_positive, default=300)
    c.add_argument("--json", default=None)
    c.add_argument("--cache", default="runs/compare-cache", help="where trained adapters are kept and reused")
    c.add_argument("--also-on", default="", help="other tasks to measure each adapter on (what it costs elsewhere)")
    _add_train_args(c)
    c.set_defaults(func=cmd_compare)

    k = sub.add_parser("tasks", help="list the tasks and their chance levels")
    k.set_defaults(func=cmd_tasks)

    ap = sub.add_parser("app", help="the Gradio app (what `make demo` runs)")
    ap.add_argument("--backbone", default=None, help=BACKBONE_HELP)
    ap.add_argument("--quant", default="none", choices=["none", "8bit", "4bit"])
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    ap.add_argument("--workdir", default=None, help="where sessions keep their VLibrary (default: a temp folder)")
    ap.add_argument("--allow-backbone-dir", action="append", metavar="DIR",
                    help="served beyond localhost, the Backbone tab loads only the teaching VLM and folders under "
                         "these (repeatable); on localhost any path loads")
    ap.set_defaults(func=cmd_app)

    d = sub.add_parser("demo", help="a quick ICL evaluation table of the teaching VLM on every task")
    d.add_argument("--episodes", type=_positive, default=100)
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_demo)

    v = sub.add_parser("vlibrary", help="the adapter library: list, show, search, add, remove "
                       "(root: --root, else $MMICT_VLIBRARY, else ~/.cache/mmict/vlibrary)")
    vsub = v.add_subparsers(dest="vcommand", required=True)
    vl = vsub.add_parser("list", help="every entry")
    vs = vsub.add_parser("show", help="one entry's metadata as JSON")
    vs.add_argument("name")
    vf = vsub.add_parser("search", help="entries ranked by TF-IDF match of name, description, task, method")
    vf.add_argument("text")
    vf.add_argument("--top", type=_positive, default=10)
    va = vsub.add_parser("add", help="store a saved adapter folder (adapter.safetensors + adapter_config.json)")
    va.add_argument("name")
    va.add_argument("--from", dest="source", required=True, help="the adapter folder")
    va.add_argument("--task", required=True)
    va.add_argument("--description", default="")
    va.add_argument("--shots", type=int, default=None)
    va.add_argument("--samples", type=int, default=None)
    va.add_argument("--metrics", default=None, help='JSON object, e.g. \'{"accuracy": 0.8}\'')
    va.add_argument("--overwrite", action="store_true")
    vr = vsub.add_parser("remove", help="delete an entry")
    vr.add_argument("name")
    for sp in (vl, vs, vf, va, vr):
        sp.add_argument("--root", default=None, help="library folder")
    for sp in (vl, vs, vf):
        sp.add_argument("--no-starter", action="store_true",
                        help="leave out the starter library shipped with the teaching VLM (listed read-only by default)")
    v.set_defaults(func=cmd_vlibrary)

    from .presets.command import add_parser as add_preset_parser  # `mmict preset list|show|run`

    add_preset_parser(sub)
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
