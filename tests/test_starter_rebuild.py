"""The starter library rebuilds from its own builder and seed to within the interval its entry
reports (issue 18's acceptance), checked on the cheapest entry (HiFICL, fixed binding: ~1 min)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cheapest_starter_entry_rebuilds_within_its_interval():
    spec = importlib.util.spec_from_file_location("check_starter_rebuild", ROOT / "scripts" / "check_starter_rebuild.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    (row,) = mod.check(["binding-fixed.hificl"])
    assert row["episodes"] >= 100
    assert row["inside"], row
