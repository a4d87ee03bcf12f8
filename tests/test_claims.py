"""Seed summaries and claim verdicts (mmict_core.evaluate.claims) against scipy and hand cases."""
import math

import pytest
from scipy import stats

from mmict_core.evaluate.claims import T975, chain_verdict, summarize_seeds, verdict_ge


def test_t_quantiles_are_scipys():
    for df, q in T975.items():
        assert q == pytest.approx(stats.t.ppf(0.975, df), abs=1e-8)


def test_summary_is_the_t_interval():
    xs = [0.61, 0.70, 0.64]
    s = summarize_seeds(xs)
    lo, hi = stats.t.interval(0.95, len(xs) - 1, loc=sum(xs) / 3, scale=stats.sem(xs))
    assert s.mean == pytest.approx(0.65) and s.lo == pytest.approx(lo) and s.hi == pytest.approx(hi)
    one = summarize_seeds([0.4])
    assert (one.lo, one.hi) == (0.4, 0.4)
    with pytest.raises(ValueError):
        summarize_seeds([])


def test_verdicts():
    hi_, lo_ = summarize_seeds([0.90, 0.92, 0.91]), summarize_seeds([0.50, 0.52, 0.51])
    assert verdict_ge(hi_, lo_) == "holds" and verdict_ge(lo_, hi_) == "does not hold"
    noisy = summarize_seeds([0.40, 0.95, 0.60])
    assert verdict_ge(noisy, lo_) == "inconclusive" and verdict_ge(lo_, noisy) == "inconclusive"
    tie = summarize_seeds([1.0, 1.0, 1.0])
    assert verdict_ge(tie, summarize_seeds([1.0, 1.0, 1.0])) == "holds"
    # against a training-free method measured once: every seed at the same value is a tie (>= holds),
    # one seed below it leaves the interval straddling it
    assert verdict_ge(tie, summarize_seeds([1.0])) == "holds"
    assert verdict_ge(summarize_seeds([1.0, 1.0, 0.99]), summarize_seeds([1.0])) == "inconclusive"
    assert verdict_ge(summarize_seeds([0.5, 0.5, 0.5]), summarize_seeds([1.0])) == "does not hold"
    assert chain_verdict([hi_, hi_, lo_]) == "holds"
    assert chain_verdict([lo_, hi_, noisy]) == "does not hold"
    assert chain_verdict([hi_, noisy, lo_]) == "inconclusive"
    assert math.isfinite(hi_.as_dict()["ci95"][0])


def test_write_marked_block(tmp_path):
    from mmict_core.evaluate.claims import write_marked_block

    f = tmp_path / "R.md"
    f.write_text("a\n<!-- b -->\nold\n<!-- /b -->\nz\n")
    assert not write_marked_block(f, "<!-- b -->", "<!-- /b -->", "new", check=True)
    assert write_marked_block(f, "<!-- b -->", "<!-- /b -->", "new")
    assert f.read_text() == "a\n<!-- b -->\nnew\n<!-- /b -->\nz\n"
    assert write_marked_block(f, "<!-- b -->", "<!-- /b -->", "new", check=True)
    f.write_text("no markers")
    with pytest.raises(ValueError, match="exactly one block"):
        write_marked_block(f, "<!-- b -->", "<!-- /b -->", "x")
