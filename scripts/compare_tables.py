"""The README's method-comparison tables, made from the JSON that ``scripts/compare_teaching.sh`` writes.

    python scripts/compare_tables.py --out benchmarks/results/compare            # print the tables
    python scripts/compare_tables.py --readme --out benchmarks/results/compare   # rewrite the README's blocks

Each JSON records the fingerprint of the backbone it measured; the README names it, and a test fails when
it is not the shipped checkpoint's (tests/test_compare_tables.py).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "compare"
MARK = {"fixed": "compare-fixed", "episode": "compare-episode", "vectors": "vector-table"}
VECTOR_ROWS = (("icl:0", "ICL 0-shot"), ("icl:5", "ICL 5-shot"), ("task-vector:5@layer=1", "task vector, layer 1"),
               ("task-vector:5@layer=2", "task vector, layer 2"), ("function-vector:5", "function vector"),
               ("mtv:5", "MTV 5 demos"), ("mtv:8", "MTV 8 demos"))
TRAINED_ROWS = (("live", "LIVE (trained)*"), ("mimic", "MimIC (trained)*"), ("m2iv", "M2IV (trained)*"),
                ("hificl", "HiFICL (trained)*"))
VECTOR_TASKS = ("operator", "format", "binding")


def _load(out: Path, name: str) -> dict | None:
    p = out / f"{name}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def _rows(rec: dict) -> dict[str, dict]:
    return {r["method"]: r for r in rec["rows"]}


def _provenance(recs: list[dict]) -> str:
    prints = sorted({r.get("backbone", "not recorded") for r in recs})
    return "backbone fingerprint " + ", ".join(f"`{p[:12]}`" for p in prints)


def fixed_table(rec: dict) -> str:
    lines = ["| method | shots | binding | shapes-vqa (not trained on) | trainable params | train s | infer ms |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['shots']} | {r['accuracy']:.3f} | {r.get('acc_shapes-vqa', float('nan')):.3f} | "
              f"{r['trainable_params']:,} | {r['train_seconds']:.1f} | {r['infer_ms']:.2f} |" for r in rec["rows"]]
    return "\n".join(lines + ["", f"({rec['episodes']} held-out episodes, seed {rec['seed']}; {_provenance([rec])}.)"])


def episode_table(rec: dict) -> str:
    lines = ["| method | shots | binding | trainable params | train s | infer ms |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['shots']} | {r['accuracy']:.3f} | {r['trainable_params']:,} | "
              f"{r['train_seconds']:.1f} | {r['infer_ms']:.2f} |" for r in rec["rows"]]
    return "\n".join(lines + ["", f"({rec['episodes']} held-out episodes, seed {rec['seed']}; {_provenance([rec])}.)"])


def vector_table(out: Path) -> str | None:
    vec = {t: _load(out, f"vectors_{t}") for t in VECTOR_TASKS}
    if not all(vec.values()):
        return None
    trained = {"operator": _load(out, "compare_operator"), "format": _load(out, "compare_format"),
               "binding": _load(out, "compare_fixed")}
    lines = ["| method | operator | format | binding (fixed) | infer ms (operator) |", "|---|---|---|---|---|"]
    for key, label in VECTOR_ROWS:
        cells = [f"{_rows(vec[t])[key]['accuracy']:.3f}" if key in _rows(vec[t]) else "–" for t in VECTOR_TASKS]
        ms = _rows(vec["operator"]).get(key, {}).get("infer_ms")
        lines.append(f"| {label} | " + " | ".join(cells) + " |" + ("" if ms is None else f" {ms:.0f}") + " |")
    for key, label in TRAINED_ROWS:
        cells = [f"{_rows(trained[t])[key]['accuracy']:.3f}" if trained[t] and key in _rows(trained[t]) else "–"
                 for t in VECTOR_TASKS]
        lines.append(f"| {label} | " + " | ".join(cells) + " | |")
    recs = [r for r in [*vec.values(), *trained.values()] if r]
    return "\n".join(lines + ["", f"({vec['operator']['episodes']} held-out episodes, seed {vec['operator']['seed']}; "
                                  f"{_provenance(recs)}.)"])


def blocks(out: Path) -> dict[str, str]:
    """{marker name: table} for every table whose JSON is in ``out``."""
    got = {}
    if (rec := _load(out, "compare_fixed")) is not None:
        got[MARK["fixed"]] = fixed_table(rec)
    if (rec := _load(out, "compare_episode")) is not None:
        got[MARK["episode"]] = episode_table(rec)
    if (table := vector_table(out)) is not None:
        got[MARK["vectors"]] = table
    return got


def write_readme(out: Path, readme: Path = ROOT / "README.md", check: bool = False) -> bool:
    """Rewrite (or with ``check``, compare) each README block made from ``out``; True when all agree."""
    import sys

    sys.path.insert(0, str(ROOT))
    from mmict_core.evaluate.claims import write_marked_block

    ok = True
    for name, body in blocks(out).items():
        ok &= write_marked_block(readme, f"<!-- {name} -->", f"<!-- /{name} -->", body, check=check)
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--readme", action="store_true")
    a = ap.parse_args()
    if a.readme:
        write_readme(Path(a.out))
    for name, body in blocks(Path(a.out)).items():
        print(f"<!-- {name} -->\n{body}\n")


if __name__ == "__main__":
    main()
