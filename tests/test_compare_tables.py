"""The README's method-comparison tables are made from the committed `mmict compare` JSON of the shipped
checkpoint (scripts/compare_tables.py): a table typed by hand, or measured on another checkpoint, fails here."""
from __future__ import annotations

import json
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def _mod():
    from conftest import load_script

    return load_script("compare_tables")


def _rec(task, rows, fp="ab" * 32):
    return {"task": task, "episodes": 300, "seed": 0, "backbone": fp, "rows": rows}


def _row(method, acc, shots=0, **extra):
    return {"method": method, "shots": shots, "accuracy": acc, "trainable_params": 1234, "train_seconds": 5.0,
            "infer_ms": 2.5, **extra}


def test_tables_from_known_json(tmp_path):
    mod = _mod()
    (tmp_path / "compare_fixed.json").write_text(json.dumps(_rec("binding", [
        _row("icl:8", 1.0, 8, **{"acc_shapes-vqa": 0.94}), _row("mimic", 0.627, **{"acc_shapes-vqa": 0.92})])))
    for task, acc in (("operator", 0.91), ("format", 0.62), ("binding", 0.08)):
        (tmp_path / f"vectors_{task}.json").write_text(json.dumps(_rec(task, [_row("task-vector:5@layer=1", acc, 5)])))
    (tmp_path / "compare_operator.json").write_text(json.dumps(_rec("operator", [_row("mimic", 0.35)])))
    got = mod.blocks(tmp_path)
    assert set(got) == {"compare-fixed", "vector-table"}  # no episode JSON: no episode table
    fixed = got["compare-fixed"].splitlines()
    assert fixed[2:4] == ["| icl:8 | 8 | 1.000 | 0.940 | 1,234 | 5.0 | 2.50 |", "| mimic | 0 | 0.627 | 0.920 | 1,234 | 5.0 | 2.50 |"]
    assert "backbone fingerprint `abababababab`" in fixed[-1]
    vec = {line.split(" | ")[0]: line for line in got["vector-table"].splitlines()}
    assert vec["| task vector, layer 1"] == "| task vector, layer 1 | 0.910 | 0.620 | 0.080 | 2 |"
    assert vec["| ICL 0-shot"] == "| ICL 0-shot | – | – | – | |"  # not measured: a dash, never a number
    # trained rows: operator from compare_operator, binding from compare_fixed, format not measured
    assert vec["| MimIC (trained)*"] == "| MimIC (trained)* | 0.350 | – | 0.627 | |"


def test_readme_tables_are_the_committed_json_of_the_shipped_checkpoint():
    mod = _mod()
    recs = sorted(mod.OUT.glob("*.json"))
    assert {p.stem for p in recs} >= {"compare_fixed", "compare_episode", "vectors_operator", "vectors_format",
                                      "vectors_binding"}, "bash scripts/compare_teaching.sh writes these"
    from mmict_core.backbones import load_backbone

    fp = load_backbone("teaching").fingerprint()
    for p in recs:
        assert json.loads(p.read_text()).get("backbone") == fp, (
            f"{p.name} was not measured on the shipped checkpoint: bash scripts/compare_teaching.sh")
    assert mod.write_readme(mod.OUT, check=True), "README.md's comparison tables are stale: python scripts/compare_tables.py --readme"
