"""The README's downstream claim block is made from the committed per-run JSON (a stale or
hand-typed number fails here), and its table agrees with a plain re-computation from that JSON."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]


def _script():
    from conftest import load_script

    return load_script("measure_downstream")


def test_readme_block_equals_what_the_json_gives():
    md = _script()
    assert md.write_readme(list(md.CLAIM_TASKS), ROOT / md.RESULTS, ROOT / "README.md", check=True), (
        "README.md's claim block is stale: python scripts/measure_downstream.py --summary --readme "
        f"--out {md.RESULTS}")


def test_table_rows_recomputed_from_the_json():
    md = _script()
    out = ROOT / md.RESULTS
    text = md.summary(list(md.CLAIM_TASKS), out)
    measured = [t for t in md.CLAIM_TASKS if any(out.glob(f"{t}.*.json"))]
    assert {"ft-vqa", "ft-caption"} <= set(measured)
    for task in measured:
        for method in ("vanilla-ft", "vanilla-ict", "mmict"):
            acc = [json.loads(p.read_text())["results"][0]["accuracy"] for p in sorted(out.glob(f"{task}.{method}.seed*.json"))]
            assert len(acc) == 3, f"{task}/{method}: expected 3 seeds"
            m, half = np.mean(acc), stats.t.ppf(0.975, 2) * np.std(acc, ddof=1) / np.sqrt(3)
            row = next(line for line in text.splitlines() if line.startswith(f"| {task} | {method} |"))
            got = [float(x) for x in re.findall(r"\d\.\d{3}", row.split("|")[4])]
            assert got == pytest.approx([m, max(m - half, 0.0), min(m + half, 1.0)], abs=6e-4), row  # an accuracy: cut to [0, 1]


def test_readme_starter_ranges_match_the_shipped_entries():
    """The README quotes the ranges of held-out accuracy of the shipped ft-vqa adapters: they must be
    what the shipped entries record (rebuild the library -> update the sentence)."""
    from mmict_core.casestudy import ADAPTER_METHODS, HUB_METHODS, STARTER_DIR

    readme = " ".join((ROOT / "README.md").read_text().split())
    m = re.search(r"held-out accuracy (\d\.\d\d)–(\d\.\d\d), in each entry, against (\d\.\d\d)–(\d\.\d\d) for the M-Hub", readme)
    assert m, "the README's sentence on the starter library's ft-vqa adapters is gone or reworded"
    acc = lambda name: json.loads((Path(STARTER_DIR) / f"ft-vqa.{name}" / "entry.json").read_text())["metrics"]["accuracy"]
    adapters = [acc(n) for n in ADAPTER_METHODS]
    hub = [acc(n) for n in HUB_METHODS]
    assert [float(x) for x in m.groups()] == pytest.approx([min(adapters), max(adapters), min(hub), max(hub)], abs=0.006)


def test_readme_binding_block_equals_what_the_json_gives():
    from conftest import load_script

    mod = load_script("measure_binding_claims")
    assert mod.write_readme(ROOT / "benchmarks" / "results" / "claims" / "binding", ROOT / "README.md", check=True), (
        "README.md's binding-claim block is stale: python scripts/measure_binding_claims.py --readme")



def test_training_cost_verdicts_against_the_papers_ratio():
    """HiFICL / MimIC step time against 1/7.5: holds only when even the slowest HiFICL round over the
    fastest MimIC round is below it; does not hold when the fastest pairing is above it."""
    from conftest import load_script

    mod = load_script("measure_binding_claims")

    def rows(h, m):  # (min, median) step seconds
        return {"training": {"rows": [
            {"method": "hificl", "train_shots": 0, "step_s": {"min": h[0], "median": h[1], "n": 6}},
            {"method": "mimic", "train_shots": 4, "step_s": {"min": m[0], "median": m[1], "n": 6}}]}, "meta": {}}

    assert "**holds**" in mod.training_cost_verdicts(rows((0.010, 0.010), (0.100, 0.100)))[0]  # 0.10 < 0.133
    assert "**does not hold**" in mod.training_cost_verdicts(rows((0.030, 0.033), (0.090, 0.100)))[0]  # 0.30
    assert "**inconclusive**" in mod.training_cost_verdicts(rows((0.012, 0.013), (0.090, 0.100)))[0]  # 0.12..0.144
    line = mod.training_cost_verdicts(rows((0.010, 0.010), (0.100, 0.100)))[0]
    assert "time ratio 0.100" in line and "(its default)" in line
