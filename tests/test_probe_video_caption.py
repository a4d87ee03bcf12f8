"""scripts/probe_video_caption.py: how a predicted video caption's events are counted, on hand-made cases."""
from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))  # the probe imports its sibling clip_caption_errors
spec = importlib.util.spec_from_file_location("probe_video_caption", SCRIPTS / "probe_video_caption.py")
pvc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pvc)

REFS = ["the red circle moves left and the blue cross appears", "the small circle moves left and the large cross appears"]
DEMOS = ["the green square shrinks", "the yellow triangle turns red"]


def test_events_drop_articles_and_split_on_and():
    assert pvc.events(REFS[0]) == ["red circle moves left", "blue cross appears"]


def test_each_event_is_counted_once_by_kind():
    assert pvc.classify(REFS[0], REFS, DEMOS) == Counter(right=2)
    assert pvc.classify(REFS[1], REFS, DEMOS) == Counter(right=2)  # the other naming convention is right too
    # one right event, one copied from a demonstration
    assert pvc.classify("the small circle moves left and the green square shrinks", REFS, DEMOS) == \
        Counter({"right": 1, "from a demo": 1})
    # a query actor doing the wrong thing, and an actor that is not in the query
    assert pvc.classify("the red circle turns red and the purple star grows", REFS, DEMOS) == \
        Counter({"other": 2, "right actor, wrong action": 1, "wrong actor": 1})
