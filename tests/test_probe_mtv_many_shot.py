"""The MTV many-shot probe's bookkeeping, on hand-made cases and against the method's own prompts."""
from conftest import load_script

from mmict_core.data import Episode, make_episode
from mmict_core.methods.vectors import dummy_query_contexts


def test_dummy_answers_are_the_dummy_queries_mtv_builds():
    probe = load_script("probe_mtv_many_shot")
    ep = make_episode("operator", 7, seed=0, index=0, split="val")
    built = dummy_query_contexts(ep, 2, per_context=3)  # what MTV reads
    assert probe.dummy_answers([d.answer for d in ep.demos], 3, 2) == [c.query.answer for c in built]
    assert isinstance(built[0], Episode)


def test_shares_by_hand():
    shares = load_script("probe_mtv_many_shot").shares
    preds = [" Vex", "mox", "tufa", "gorp"]
    golds = ["vex", "vex", "tufa", "fep"]
    dummies = [["vex", "mox"], ["mox", "mox"], ["gorp", "tufa"], ["fep", "gorp"]]
    s = shares(preds, golds, dummies)
    assert s["accuracy"] == 2 / 4  # vex, tufa
    assert s["answer_is_a_dummy_answer"] == 4 / 4
    assert s["gold_is_a_dummy_answer"] == 3 / 4  # vex (1st), tufa (3rd), fep (4th); not the 2nd
    assert s["copy_first_dummy_accuracy"] == 2 / 4  # vex, fep
    assert s["copy_majority_dummy_accuracy"] == 2 / 4  # ties go to the first: vex, fep
    assert s["answer_is_first_dummy"] == 2 / 4  # vex, mox
