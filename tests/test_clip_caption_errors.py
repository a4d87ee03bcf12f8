"""scripts/clip_caption_errors.py: the kind of difference between a predicted and a reference clip
caption, on hand-made cases whose answer is known."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location(
    "clip_caption_errors", Path(__file__).resolve().parents[1] / "scripts" / "clip_caption_errors.py")
cce = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cce)

REF = "the large red square shrinks and the small green triangle moves up"


@pytest.mark.parametrize("pred, kinds", [
    (REF, []),
    (" " + REF + " ", []),
    ("the large red square shrinks", ["number of events"]),
    (REF + " and the small blue cross appears", ["number of events"]),
    ("the small red square shrinks and the small green triangle moves up", ["actor"]),
    ("the large red square grows and the small green triangle moves up", ["verb"]),
    ("the large red square shrinks and the small green triangle moves down", ["detail"]),
    ("the large red circle grows and the small green triangle moves left", ["actor", "verb", "detail"]),
    ("the large red square shrinks and the small green triangle", ["verb"]),
])
def test_diagnose_known_cases(pred, kinds):
    assert cce.diagnose(pred, REF) == kinds


def test_split_event_finds_the_verb_after_the_actor():
    assert cce.split_event("the small yellow cross moves up") == ("small yellow cross", "moves up")
    assert cce.split_event("the large yellow circle turns red") == ("large yellow circle", "turns red")
    assert cce.split_event("large green cross appears") == ("large green cross", "appears")
    assert cce.split_event("the blue thing") == ("blue thing", "")
