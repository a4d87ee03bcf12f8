"""The case study (mmict_core.casestudy, `mmict case-study`, the app's Case study tab): the Wilson
interval against its defining equation and textbook values, each method's accuracy re-computed by
hand on the same held-out episodes, the JSON schema of the CLI, missing starter entries named, the
starter-library builder's metadata, and the tab's export carrying the accuracy table."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from mmict_core import casestudy as cs
from mmict_core.data import Episode, get_task, make_episode
from mmict_core.evaluate.exact_match import exact_match
from mmict_core.methods import get_method
from mmict_core.train import TrainConfig, train
from mmict_core.vlibrary import VLibrary

TASK = "ft-vqa"


@pytest.fixture(scope="module")
def teaching_vlm():
    """The shipped teaching VLM (what the CLI and the app load by default)."""
    from mmict_core.backbones import load_backbone

    return load_backbone("teaching")


@pytest.mark.parametrize("x,n", [(0, 10), (5, 10), (10, 10), (37, 50), (1, 3), (149.5, 300)])
def test_wilson_interval_solves_its_score_equation(x, n):
    lo, hi = cs.wilson_interval(x, n)
    p, z = x / n, 1.959964
    assert 0 <= lo <= p <= hi <= 1
    for b in (lo, hi):  # each end p0 is where the score statistic |p - p0| / sqrt(p0 (1 - p0) / n) equals z
        if 0 < b < 1:
            assert abs(abs(p - b) / math.sqrt(b * (1 - b) / n) - z) < 1e-6
    assert (lo == 0) == (x == 0) and (hi == 1) == (x == n)


def test_wilson_interval_textbook_values():
    # Newcombe (1998), Table I: 81/263 -> 0.2553 to 0.3662; 15/148 -> 0.0624 to 0.1605
    for (x, n), (lo, hi) in {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605)}.items():
        got = cs.wilson_interval(x, n)
        assert abs(got[0] - lo) < 1e-4 and abs(got[1] - hi) < 1e-4
    with pytest.raises(ValueError):
        cs.wilson_interval(0, 0)


def test_entry_names_and_case_types():
    assert cs.entry_name("ft-vqa", "mmict") == "ft-vqa.mmict"
    assert cs.entry_name("binding", "hificl", fixed_binding=True) == "binding-fixed.hificl"
    assert {cs.resolve_task(c) for c in ("vqa", "caption", "video-qa", "video-caption")} == {
        "ft-vqa", "ft-caption", "ft-video-qa", "ft-video-caption"}
    assert cs.resolve_task("binding") == "binding" and cs.resolve_task("ft-vqa") == "ft-vqa"


@pytest.fixture(scope="module")
def tiny_library(tmp_path_factory, teaching_vlm):
    """VanillaFT / VanillaICT / MMICT on ft-vqa, two steps each: a stand-in starter library."""
    lib = VLibrary(tmp_path_factory.mktemp("starter"))
    for name in cs.CASE_METHODS:
        cls = get_method(name)
        kw = {"seed": 0, **({"shots": 2, "train_shots": 2} if cls.uses_demos else {})}
        m = cls(teaching_vlm, cls.config_class(**kw))
        train(m, TrainConfig(task=TASK, steps=2, batch_size=2, samples=8, lr=1e-3, seed=0), progress=False)
        lib.add(cs.entry_name(TASK, name), m, task=TASK, shots=2)
    return lib


def test_case_study_rows_and_accuracy_recomputed_by_hand(teaching_vlm, tiny_library):
    n, k = 6, 2
    case = cs.run_case_study(teaching_vlm, "vqa", ["icl", *cs.CASE_METHODS], shots=k, episodes=n, seed=0, index=3,
                             library=tiny_library)
    assert case.task == TASK
    ep = make_episode(TASK, k, seed=0, index=3, split="test")
    assert case.query["prompt"] == ep.query.prompt and case.query["answer"] == ep.query.answer
    assert [d["answer"] for d in case.query["demos"]] == [d.answer for d in ep.demos]
    t = get_task(TASK)
    for row, acc in zip(case.rows, case.accuracy):
        m = cs.method_for(teaching_vlm, row["method"], TASK, shots=k, library=tiny_library)
        shots = k if m.uses_demos else 0
        assert row["shots"] == acc["shots"] == shots and acc["n"] == n
        view = Episode(demos=list(ep.demos)[:shots], query=ep.query, task=ep.task, info=ep.info)
        out = m.generate([view], max_new_tokens=t.max_new_tokens)[0]
        assert row["output"] == out and row["correct"] == bool(exact_match(out, ep.query.answers))
        # the accuracy, by hand: the same held-out episodes, one at a time
        hits = []
        for i in range(n):
            e = make_episode(t, shots, seed=0, index=i, split="test", pool_size=max(t.default_pool_size, shots))
            hits.append(float(exact_match(m.generate([e], max_new_tokens=t.max_new_tokens)[0], e.query.answers)))
        assert acc["accuracy"] == pytest.approx(np.mean(hits), abs=1e-4)
        assert acc["ci95"] == pytest.approx(list(cs.wilson_interval(sum(hits), n)), abs=1e-4)
    assert [r["method"] for r in case.rows] == ["icl", *cs.CASE_METHODS]
    assert [r["shots"] for r in case.rows] == [k, 0, k, k]  # VanillaFT reads the query alone


def test_missing_entries_are_named(tiny_library):
    assert cs.missing_entries("vqa", cs.CASE_METHODS, tiny_library) == []
    assert cs.missing_entries("vqa", ["icl", "hificl"], tiny_library) == ["ft-vqa.hificl"]  # icl needs none
    assert cs.missing_entries("video-qa", ["mmict"], tiny_library) == ["ft-video-qa.mmict"]


def test_cli_json_schema(tmp_path, tiny_library):
    out = tmp_path / "case.json"
    r = subprocess.run([sys.executable, "-m", "mmict_core.cli", "case-study", "--task", "vqa", "--episodes", "3",
                        "--shots", "2", "--library", str(tiny_library.root), "--json", str(out),
                        "--png", str(tmp_path / "c.png"), "--html", str(tmp_path / "c.html"), "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(out.read_text())
    assert set(d) == {"task", "query", "rows", "accuracy"} and d["task"] == TASK
    assert [x["method"] for x in d["rows"]] == list(cs.CASE_METHODS)
    assert all(set(x) >= {"method", "shots", "output", "correct"} for x in d["rows"])
    assert all(set(x) >= {"method", "accuracy", "n", "ci95"} and x["n"] == 3 for x in d["accuracy"])
    html = (tmp_path / "c.html").read_text()
    assert "mmict" in html and (tmp_path / "c.png").stat().st_size > 1000
    for a in d["accuracy"]:  # the card carries the accuracy table
        assert f"{a['accuracy']:.3f}" in html


def test_builder_stores_command_steps_seconds_and_accuracy(tmp_path, teaching_vlm, monkeypatch):
    monkeypatch.setitem(cs.STARTER_TRAIN, "hub", dict(steps=2, lr=1e-3, batch_size=2, samples=8))
    rep = cs.build_starter_library(tmp_path, seed=0, only=["ft-vqa.vanilla-ft"], episodes=4, backbone=teaching_vlm,
                                   progress=False)
    assert [r["name"] for r in rep] == ["ft-vqa.vanilla-ft"]
    (e,) = VLibrary(tmp_path).list()
    assert e["name"] == "ft-vqa.vanilla-ft" and e["task"] == TASK
    assert "mmict train --method vanilla-ft --task ft-vqa --steps 2" in e["description"]
    m = e["metrics"]
    assert m["steps"] == 2 and m["episodes"] == 4 and m["train_seconds"] > 0
    assert m["ci95_lo"] <= m["accuracy"] <= m["ci95_hi"]
    assert (m["ci95_lo"], m["ci95_hi"]) == pytest.approx(cs.wilson_interval(m["accuracy"] * 4, 4), abs=1e-4)


def test_app_tab_runs_refuses_missing_and_exports(tmp_path, tiny_library):
    import gradio as gr

    from app.case_study import CaseStudyTab
    from app.handlers import Studio

    tab = CaseStudyTab(Studio(workdir=tmp_path), library=tiny_library)
    assert tab.available() == ["vqa"]
    img, text = tab.preview("vqa", 2, 0)
    ep = make_episode(TASK, 2, seed=0, index=0, split="test")
    assert ep.query.prompt in text and img.shape[2] == 3
    with pytest.raises(gr.Error, match="export"):
        tab.export()
    with pytest.raises(gr.Error, match="ft-video-qa.vanilla-ft"):
        tab.run("video-qa", [], 2, 5, 0)
    rows, acc, card = tab.run("vqa", ["icl"], 2, 4, 0)  # still serving after the refusal
    assert [r[0] for r in rows] == [*cs.CASE_METHODS, "icl"] and all(a[4] == 4 for a in acc)
    assert "Accuracy" in card or "accuracy" in card
    png, html = tab.export()
    assert png.endswith(".png") and html.endswith(".html")
    assert all(f"{a[2]:.3f}" in open(html).read() for a in acc)
