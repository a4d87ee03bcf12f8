"""The README's benchmark table, generated from a report JSON between two markers.

``python -m benchmarks report --readme`` rewrites the block in README.md from
benchmarks/results/report.json; ``--check`` only says whether it is current (exit 1 if not).
tests/test_benchmarks.py fails when the committed README and report.json disagree.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
REPORT = ROOT / "benchmarks" / "results" / "report.json"
BEGIN = ("<!-- BENCHMARK TABLE: generated from benchmarks/results/report.json by "
         "`python -m benchmarks report --readme`; do not edit by hand -->")
END = "<!-- /BENCHMARK TABLE -->"


def _value(g: dict) -> str:
    return "not measured" if g.get("value") is None else f"{g['value']:.3f}"


def block(report: dict) -> str:
    """The markdown between the markers (markers included) for ``report`` (a report.json)."""
    meta, goals = report["meta"], report.get("goals") or []
    mach, ck, git = meta.get("machine") or {}, meta.get("checkpoint") or {}, meta.get("git") or {}
    sha, commit = ck.get("sha256"), git.get("commit")
    n_pass = sum(bool(g.get("passed")) for g in goals)
    head = (f"Latest {'quick' if meta.get('quick') else 'full'} run: {meta['started'][:10]}, "
            f"{mach.get('cpu_model') or 'CPU not recorded'}, {mach.get('cores', meta.get('cpu_count'))} cores, "
            f"torch {mach.get('torch', meta.get('torch'))}, {meta.get('threads')} torch thread(s), "
            f"training beside it: {meta.get('training_running')}, "
            + (f"1-minute load average {meta['load_avg'][0]:.1f} at the start, " if meta.get("load_avg") else "")
            + f"{meta.get('wall_s', 0):.0f} s; "
            + (f"checkpoint `{ck['path']}` sha256 `{sha[:16]}`" if sha else "checkpoint not recorded")
            + (f", commit `{commit[:12]}`{' (with uncommitted changes)' if git.get('dirty') else ''}" if commit
               else ", commit not recorded")
            + f" — **{n_pass} of {len(goals)} goals PASS**:")
    rows = ["| goal | measured | target | |", "|---|---|---|---|"]
    rows += [f"| {g['name']} | {_value(g)} | {g['op']} {g['threshold']:g} | {g['status']} |" for g in goals]
    return "\n".join([BEGIN, head, "", *rows, END])


def find_block(text: str) -> tuple[int, int]:
    """(start, end) offsets of the marked block in ``text`` (end after the END marker)."""
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"README.md must hold exactly one benchmark block between {BEGIN!r} and {END!r}")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    if end < start:
        raise ValueError("the benchmark block's end marker comes before its start marker")
    return start, end


def current(text: str) -> str:
    start, end = find_block(text)
    return text[start:end]


def updated(text: str, report: dict) -> str:
    start, end = find_block(text)
    return text[:start] + block(report) + text[end:]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readme", action="store_true", help="rewrite the benchmark block of README.md from the report")
    p.add_argument("--check", action="store_true", help="exit 1 when the README block differs from the report")
    p.add_argument("--json", type=Path, default=REPORT, help=f"the report (default {REPORT.relative_to(ROOT)})")
    p.add_argument("--file", type=Path, default=README, help="the README to read / rewrite")
    args = p.parse_args(argv)
    report = json.loads(args.json.read_text())
    text = args.file.read_text()
    if args.readme:
        new = updated(text, report)
        if new != text:
            args.file.write_text(new)
        print(f"{args.file}: benchmark block {'rewritten' if new != text else 'already current'} from {args.json}")
        return 0
    if args.check:
        ok = current(text) == block(report)
        print(f"{args.file}: benchmark block {'matches' if ok else 'DIFFERS from'} {args.json}")
        return 0 if ok else 1
    print(block(report))
    return 0
