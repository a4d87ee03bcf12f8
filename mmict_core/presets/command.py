"""``mmict preset list | show NAME | run NAME``: the command line of the presets (docs/presets.md)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .schema import TINY_KINDS


def add_parser(sub) -> None:
    """Add the ``preset`` command to the ``mmict`` sub-parsers."""
    p = sub.add_parser("preset", help="the papers' protocols as presets (configs/): list, show, run; docs/presets.md")
    psub = p.add_subparsers(dest="pcommand", required=True)
    psub.add_parser("list", help="every preset with its backbone, dataset, method and the paper's number")
    for name, help_ in (("show", "the resolved preset as YAML"),
                        ("run", "train and evaluate; measured next to the papers' numbers")):
        q = psub.add_parser(name, help=help_)
        q.add_argument("name", help="a preset name (mmict preset list) or a YAML/JSON file")
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a dotted key, e.g. --set train.lr=1e-4 --set data.root=/data/vqav2")
        q.add_argument("--data-root", default=None,
                       help="folder holding <dataset>/ (as $MMICT_DATA_ROOT): sets data.root to DIR/<dataset>")
        q.add_argument("--backbone", default=None,
                       help="a local checkpoint folder (or a cached hub id): sets backbone.path")
        q.add_argument("--quant", choices=("none", "8bit", "4bit"), default=None, help="sets backbone.quant")
    r = psub.choices["run"]
    r.add_argument("--dry-run", action="store_true",
                   help="build every part, read and assemble one batch, print the plan; no training")
    r.add_argument("--tiny", nargs="?", const="auto", default=None, choices=("auto",) + TINY_KINDS, metavar="KIND",
                   help="a tiny random config of the preset's class (or of KIND) and a fixture dataset: runs on CPU")
    r.add_argument("--out", default=None, help="output folder (default: the preset's output.dir)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_preset)


def load_from_args(args: argparse.Namespace) -> dict:
    """The preset named on the command line, with --set, --backbone, --quant and --data-root applied."""
    from . import load_preset

    sets = list(args.set or [])
    if args.backbone:
        sets.append(f"backbone.path={args.backbone}")
    if args.quant:
        sets.append(f"backbone.quant={args.quant}")
    if args.data_root:
        name = load_preset(args.name, sets)["data"]["dataset"]
        sets.append(f"data.root={Path(args.data_root) / name}")
    return load_preset(args.name, sets)


def list_rows() -> list[dict]:
    from . import load_preset, preset_names

    rows = []
    for name in preset_names():
        p = load_preset(name)
        ref = {(r["method"], r["shots"]): r["value"] for r in p["reference"]["rows"]}
        method = p["method"]["name"]
        paper = ref.get((method, 0), ref.get((method, p["method"]["config"].get("shots", 0))))
        rows.append({"preset": name, "backbone": p["backbone"]["id"], "dataset": p["data"]["dataset"],
                     "method": method, "paper": "-" if paper is None else paper, "icl:8": ref.get(("icl", 8), "-"),
                     "metric": p["reference"].get("metric", "")})
    return rows


def cmd_preset(args: argparse.Namespace) -> None:
    from ..cli import format_table
    from . import dump

    if args.pcommand == "list":
        print(format_table(list_rows(), ["preset", "backbone", "dataset", "method", "paper", "icl:8", "metric"]))
        return
    preset = load_from_args(args)
    if args.pcommand == "show":
        print(dump(preset), end="")
        return
    from ..parallel import world
    from .pipeline import run_preset

    name = preset["name"]
    tiny = preset["backbone"]["tiny"] if args.tiny == "auto" else args.tiny
    out = args.out
    if out is None and not args.dry_run:
        out = preset.get("output", {}).get("dir", "runs/presets/{name}").format(name=name) + ("-tiny" if tiny else "")
    main = world()[0] == 0
    res = run_preset(preset, tiny=tiny, out_dir=out, dry_run=args.dry_run, progress=not args.quiet,
                     log=print if main else (lambda *a, **k: None))
    if not main or res is None:
        return
    what = f"{name} (tiny {tiny}: random weights, fixture data -- not comparable)" if tiny else name
    if args.dry_run:
        print(json.dumps(res, indent=2, default=str))
        print(f"\ndry run of {what}: every part built, one batch read and assembled; nothing trained")
        return
    print(f"\n{what}")
    cols = ["method", "shots", "metric", "measured", "paper", "delta", "status", "source"]
    print(format_table([{k: ("-" if v is None else v) for k, v in r.items()} for r in res["comparison"]], cols))
    for note in res["summary"]["notes"]:
        print(f"note: {note}")
    if out:
        print(f"results written to {Path(out) / 'results.json'}")
