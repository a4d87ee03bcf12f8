"""The accuracy-bars figure shows exactly the rows' accuracies and intervals and draws the chance line."""
import pytest

from mmict_core.viz.bars import accuracy_bars


def test_bars_carry_the_intervals_and_the_chance_line():
    rows = [{"label": "ICL 4-shot", "accuracy": 0.9, "ci95": [0.8, 0.95]},
            {"label": "hificl", "accuracy": 1.0, "ci95": [0.96, 1.0]}]
    fig = accuracy_bars(rows, chance=0.5, chance_note="guessing one of two")
    (bar,) = fig.data
    assert list(bar.x) == ["ICL 4-shot", "hificl"] and list(bar.y) == [0.9, 1.0]
    # the error bars reach exactly the interval ends
    for y, up, down, r in zip(bar.y, bar.error_y.array, bar.error_y.arrayminus, rows):
        assert y + up == pytest.approx(r["ci95"][1]) and y - down == pytest.approx(r["ci95"][0])
    (line,) = fig.layout.shapes
    assert line.y0 == line.y1 == 0.5 and line.line.dash == "dash"
    assert "guessing one of two 0.5" in fig.layout.annotations[0].text


def test_no_chance_line_unless_asked():
    fig = accuracy_bars([{"label": "a", "accuracy": 0.2, "ci95": [0.1, 0.3]}])
    assert not fig.layout.shapes
