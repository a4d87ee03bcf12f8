"""`mmict eval` on the shipped teaching VLM: the JSON it writes, the numbers in it, bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmict_core.backbones import TeachingVLM
from mmict_core.cli import main
from mmict_core.data import make_episode
from mmict_core.evaluate.exact_match import exact_match


def test_eval_json_matches_a_plain_recomputation(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["eval", "--task", "format", "--shots", "0,2", "--episodes", "12", "--seed", "3", "--json", str(out), "--quiet"])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["task"] == "format" and rep["method"] == "icl" and rep["quant"] == "none"
    assert [r["shots"] for r in rep["results"]] == [0, 2] and all(r["n"] == 12 for r in rep["results"])
    # recompute the 2-shot accuracy by hand: same episodes, one at a time, greedy answers
    vlm = TeachingVLM.load()
    hits = 0.0
    for i in range(12):
        ep = make_episode("format", 2, seed=3, index=i, split="test")
        hits += exact_match(vlm.generate([ep], max_new_tokens=5)[0], ep.query.answers)
    assert rep["results"][1]["accuracy"] == pytest.approx(hits / 12, abs=1e-4)
    printed = capsys.readouterr().out
    assert "format" in printed and "accuracy" in printed


def test_eval_split_val_scores_the_validation_episodes(tmp_path):
    """`--split val` (for choosing among checkpoints) scores other episodes than the reported test split."""
    out = tmp_path / "v.json"
    assert main(["eval", "--task", "shapes-vqa", "--shots", "0", "--episodes", "6", "--seed", "0", "--split", "val",
                 "--json", str(out), "--quiet"]) == 0
    rep = json.loads(out.read_text())
    assert rep["split"] == "val"
    vlm = TeachingVLM.load()
    val = [make_episode("shapes-vqa", 0, seed=0, index=i, split="val") for i in range(6)]
    test = [make_episode("shapes-vqa", 0, seed=0, index=i, split="test") for i in range(6)]
    assert [e.query.prompt for e in val] != [e.query.prompt for e in test]
    hits = sum(exact_match(a, e.query.answers) for a, e in zip(vlm.generate(val, max_new_tokens=5), val))
    assert rep["results"][0]["accuracy"] == pytest.approx(hits / 6, abs=1e-4)


def test_eval_unknown_task_is_a_clear_error(capsys):
    assert main(["eval", "--task", "colours", "--episodes", "2"]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'colours'" in err and "binding" in err


def test_eval_bad_shots_is_rejected_by_the_parser():
    proc = subprocess.run([sys.executable, "-m", "mmict_core.cli", "eval", "--task", "binding", "--shots", "two"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "comma-separated whole numbers" in proc.stderr


def test_eval_too_many_demonstrations_for_the_context(capsys):
    assert main(["eval", "--task", "shapes-caption", "--shots", "60", "--episodes", "1", "--quiet"]) == 2
    assert "context holds" in capsys.readouterr().err
