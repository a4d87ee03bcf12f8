"""Notebook exercises: every solution passes its check, every registered mistake fails it with a
hint, an unwritten exercise is reported (not raised), and every notebook's exercise cells name a
registered exercise whose check cell follows."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmict_core.exercises import EXERCISES, check, predicted, solution_source
from mmict_core.exercises.core import run_check

KEYS = sorted(EXERCISES)
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("key", KEYS)
def test_solution_passes(key):
    ok, msg = run_check(key, EXERCISES[key].solution)
    assert ok, msg


@pytest.mark.parametrize("key", KEYS)
def test_solution_source_is_self_contained(key):
    """CI pastes the source into the notebook cell: it must run in a fresh namespace."""
    ns: dict = {}
    exec(solution_source(key), ns)
    ok, msg = run_check(key, ns[EXERCISES[key].solution.__name__])
    assert ok, msg


@pytest.mark.parametrize("key", KEYS)
def test_registered_mistakes_fail_with_a_hint(key):
    ex = EXERCISES[key]
    assert ex.wrong, f"{key}: register at least one plausible mistake"
    for bad in ex.wrong:
        ok, msg = run_check(key, bad)
        assert not ok and msg.startswith("✗") and "Hint:" in msg, msg


@pytest.mark.parametrize("key", KEYS)
def test_unwritten_and_broken_functions_are_reported_not_raised(key, capsys):
    def todo(*a, **k):
        raise NotImplementedError

    def broken(*a, **k):
        return 1 / 0

    assert check(key, todo) is False and "not implemented yet" in capsys.readouterr().out
    assert check(key, broken) is False
    out = capsys.readouterr().out
    assert "ZeroDivisionError" in out and "Traceback" not in out


def test_solutions_are_shown_as_source():
    src = solution_source("01.wilson")
    assert src.startswith("def wilson(") and "math.sqrt" in src


def test_predicted_compares_the_guess(capsys):
    predicted(0.5, 0.52, "accuracy")
    assert "close" in capsys.readouterr().out
    predicted(0.9, 0.5, "accuracy")
    assert "too high" in capsys.readouterr().out
    predicted(None, 0.5, "accuracy")
    assert "0.500" in capsys.readouterr().out


def test_notebook_exercise_cells_are_registered_and_checked():
    seen = set()
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        for i, c in enumerate(cells):
            key = c.get("metadata", {}).get("exercise")
            if key is None:
                continue
            assert key in EXERCISES, f"{path.name} cell {i}: unknown exercise {key!r}"
            assert "exercise" in c["metadata"].get("tags", []), f"{path.name} cell {i}: tag it 'exercise'"
            nxt = "".join(cells[i + 1]["source"])
            assert f'check("{key}"' in nxt, f"{path.name} cell {i}: the next cell must run check({key!r}, ...)"
            seen.add(key)
    assert seen == set(EXERCISES), f"registered but in no notebook: {sorted(set(EXERCISES) - seen)}"
