"""Held-out accuracy when a training run ends (the app's Train tab, Session.train): the number is
the exact-match mean over the first N held-out test episodes, re-computed here one episode at a
time; its interval is Wilson's; fixed binding reaches the task; the library entry keeps it; the
app's message judges it against the task's chance level."""
from __future__ import annotations

import numpy as np
import pytest

from app.handlers import heldout_text
from mmict_core.data import get_task, make_episode
from mmict_core.evaluate.claims import wilson_interval
from mmict_core.evaluate.exact_match import exact_match
from mmict_core.workbench import Session, TrainRequest, WorkbenchError, heldout_accuracy


def _by_hand(method, task, n, seed=0, **task_kw):
    t = get_task(task, **task_kw)
    shots = method.config.shots if method.uses_demos else 0
    hits = []
    for i in range(n):
        e = make_episode(t, shots, seed=seed, index=i, split="test", pool_size=max(t.default_pool_size, shots))
        hits.append(float(exact_match(method.generate([e], max_new_tokens=t.max_new_tokens)[0], e.query.answers)))
    return hits


@pytest.mark.parametrize("fixed", [False, True])
def test_session_train_scores_the_adapter_on_held_out_episodes(tmp_path, vlm, fixed):
    s = Session(vlm, library_root=tmp_path / "lib", pool_size=8)
    out = s.train(TrainRequest(method="lora", task="binding", samples=8, steps=2, heldout=7, fixed_binding=fixed))
    h = out.heldout
    hits = _by_hand(out.method, "binding", 7, **({"fixed_binding": True} if fixed else {}))
    assert h["n"] == 7 and h["accuracy"] == pytest.approx(np.mean(hits))
    assert h["ci95"] == pytest.approx(list(wilson_interval(sum(hits), 7)))
    assert h["chance"] == get_task("binding").chance
    (entry,) = s.library.list()
    assert entry["metrics"]["accuracy"] == pytest.approx(h["accuracy"]) and entry["metrics"]["episodes"] == 7
    assert ("fixed binding" in entry["description"]) == fixed


def test_fixed_binding_changes_the_episodes_scored(vlm):
    from mmict_core.methods import create_method

    m = create_method("lora", vlm)
    a = heldout_accuracy(m, "binding", 3)
    b = heldout_accuracy(m, "binding", 3, fixed_binding=True)
    plain = [make_episode(get_task("binding"), 0, seed=0, index=i, split="test").query.answer for i in range(3)]
    fixed = [make_episode(get_task("binding", fixed_binding=True), 0, seed=0, index=i, split="test").query.answer
             for i in range(3)]
    assert plain != fixed and a["n"] == b["n"] == 3


def test_no_held_out_scoring_by_default_and_bad_counts_refused(vlm):
    out = Session(vlm, pool_size=8).train(TrainRequest(method="lora", task="binding", samples=8, steps=1))
    assert out.heldout is None
    for bad in (-1, 1.5, 5000, float("nan")):
        with pytest.raises(WorkbenchError, match="held-out episodes"):
            TrainRequest(method="lora", heldout=bad).validate()


def test_message_judges_the_interval_against_chance():
    assert heldout_text(None) == ""
    below = heldout_text({"accuracy": 0.4, "ci95": [0.3, 0.5], "n": 50, "shots": 0, "chance": 0.5})
    above = heldout_text({"accuracy": 0.9, "ci95": [0.8, 0.96], "n": 50, "shots": 4, "chance": 0.5})
    mixed = heldout_text({"accuracy": 0.6, "ci95": [0.46, 0.72], "n": 50, "shots": 0, "chance": 0.5})
    assert "has not learned" in below and "0.400" in below and "[0.300, 0.500]" in below
    assert "above chance" in above and "not" not in above.split("—")[-1]
    assert "includes it" in mixed


def test_app_train_shows_held_out_accuracy(tmp_path):
    from app.handlers import Studio

    class Req:
        session_hash = "heldout-tab"

    studio = Studio(workdir=tmp_path)
    msgs = list(studio.train("lora", "binding", 8, 2, 5e-3, 4, 0, True, 5, request=Req(),
                             progress=lambda *a, **k: None))
    assert "Held-out accuracy" in msgs[-1][0] and "over 5 test episodes" in msgs[-1][0]


def test_held_out_accuracy_of_another_seed_with_its_speed(vlm):
    """The notebooks score with their SEED: the episodes of that seed, and the time per query."""
    from mmict_core.methods import create_method

    m = create_method("icl", vlm, shots=2)
    h = heldout_accuracy(m, "binding", 5, seed=3)
    assert h["accuracy"] == pytest.approx(np.mean(_by_hand(m, "binding", 5, seed=3))) and h["shots"] == 2
    assert h["ms_per_query"] > 0
