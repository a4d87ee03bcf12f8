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


def test_seed_accuracies_read_the_committed_runs(tmp_path):
    import json

    from mmict_core.evaluate.claims import CLAIMS_DIR, seed_accuracies

    # two formats: one accuracy per run (binding), or a list of results per shot count (downstream)
    for seed, acc in ((10, 0.5), (2, 0.25)):
        (tmp_path / f"t.m.seed{seed}.json").write_text(json.dumps({"accuracy": acc}))
    (tmp_path / "t.icl.seed0.json").write_text(json.dumps({"results": [{"shots": 0, "accuracy": 0.1},
                                                                        {"shots": 4, "accuracy": 0.7}]}))
    assert seed_accuracies("t.m", tmp_path) == [0.25, 0.5]  # seed order, not string order
    assert seed_accuracies("t.icl", tmp_path) == [0.1] and seed_accuracies("t.icl", tmp_path, shots=4) == [0.7]
    with pytest.raises(FileNotFoundError, match="no claim runs"):
        seed_accuracies("t.none", tmp_path)
    with pytest.raises(ValueError, match="8 shots"):
        seed_accuracies("t.icl", tmp_path, shots=8)
    # the committed files: the README's numbers come from these (plain json here as the reference)
    want = [json.loads((CLAIMS_DIR / "downstream" / f"ft-caption.mmict.seed{i}.json").read_text())["results"][0]["accuracy"]
            for i in range(3)]
    assert seed_accuracies("downstream/ft-caption.mmict") == want


def test_interval_is_cut_to_the_bounds_of_the_quantity():
    xs = [1.0, 1.0, 0.997]
    free, cut = summarize_seeds(xs), summarize_seeds(xs, bounds=(0.0, 1.0))
    assert free.hi > 1.0 and cut.hi == 1.0 and cut.lo == pytest.approx(free.lo) and cut.mean == free.mean
    low = summarize_seeds([0.0, 0.0, 0.01], bounds=(0.0, 1.0))
    assert low.lo == 0.0 and low.hi == pytest.approx(summarize_seeds([0.0, 0.0, 0.01]).hi)
