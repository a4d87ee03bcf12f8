"""The MMICT-binding probe's answer classes, on hand-made cases."""
from conftest import load_script


def test_classify_gold_other_shown_and_not_shown():
    classify = load_script("probe_mmict_binding").classify
    shown = {"vex", "quib"}
    assert classify(" Vex ", "vex", shown) == "gold"  # case and spaces do not matter
    assert classify("quib", "vex", shown) == "other shown"
    assert classify("drem", "vex", shown) == "not shown"
    assert classify("vex quib", "vex", shown) == "not shown"  # two words are not one of the shown words
