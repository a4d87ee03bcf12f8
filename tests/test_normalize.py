"""VQA answer normalisation and exact match: known cases of the official VQA evaluation rules
(lower-case, punctuation, number words to digits, articles dropped, contractions restored)."""
from __future__ import annotations

import pytest

from mmict_core.evaluate.exact_match import exact_match
from mmict_core.evaluate.normalize import normalize_answer


@pytest.mark.parametrize("raw,normal", [
    ("Two", "2"),                    # number words become digits
    ("ten", "10"),
    ("none", "0"),
    ("the dog", "dog"),              # articles are dropped
    ("An apple", "apple"),
    ("a red circle.", "red circle"),  # trailing period stripped
    ("dont", "don't"),               # contractions restored (the official table)
    ("oclock", "o'clock"),
    ("yall", "y'all"),
    ("Its", "its"),                  # not in the official table (nor im, ive, lets): left as written
    ("Im", "im"),
    ("yes!", "yes"),                 # punctuation removed
    ("red-circle", "red circle"),    # punctuation inside a word becomes a space
    ("red - circle", "red circle"),  # punctuation next to a space is removed
    ("1,000", "1000"),               # thousands separator dropped
    ("3.5", "3.5"),                  # decimal point kept
    ("  Red\nCircle\t", "red circle"),
    ("red    circle", "red circle"),
    ("", ""),
])
def test_normalize_answer_known_cases(raw, normal):
    assert normalize_answer(raw) == normal


@pytest.mark.parametrize("prediction,reference,match", [
    ("Two", "2", 1.0),
    ("the dog", "dog", 1.0),
    ("a red circle.", "red circle", 1.0),
    ("dont know", "don't know", 1.0),
    ("yes", "no", 0.0),
    ("red circle", "blue circle", 0.0),
    ("eleven", "11", 0.0),           # only zero..ten are mapped by the VQA rules
    ("\n yes \n", "yes", 1.0),
    ("red\ncircle", "red circle", 1.0),
    ("redcircle", "red circle", 0.0),
])
def test_exact_match_known_cases(prediction, reference, match):
    assert exact_match(prediction, [reference]) == match


def test_exact_match_any_reference_and_no_reference():
    assert exact_match("dog", ["cat", "The Dog"]) == 1.0
    assert exact_match("dog", ["cat", "bird"]) == 0.0
    assert exact_match("dog", []) == 0.0
    assert isinstance(exact_match("dog", ["dog"]), float)
