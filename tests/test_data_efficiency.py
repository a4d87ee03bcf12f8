"""Section 4 (issue 23 item 2): the run plan, resume, reuse of identical claims runs, the seed summary
against a plain recomputation, the plateau check on synthetic loss curves, the figures, and a
3-step end-to-end run at toy settings."""
from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is a top-level folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import data_efficiency as de  # noqa: E402
from benchmarks import data_summary as ds  # noqa: E402
from benchmarks.settings import full_settings, quick_settings  # noqa: E402

CLAIMS = ROOT / "benchmarks" / "results" / "claims" / "binding"


# -- the plan ---------------------------------------------------------------------------------------

def test_full_plan_methods_sizes_seeds_and_many_shot():
    s = full_settings()
    jobs = de.plan(s)
    trains = [j for j in jobs if j["kind"] == "train"]
    assert [j["kind"] for j in jobs if j["kind"] != "train"] == ["icl", "icl-fits", "vector", "vector", "vector"]
    # MTV reads 8 / 16 / 32 demos of each test episode in 1 / 2 / 4 prompts of 8 (training-free: one run each)
    mtv = [j for j in jobs if j["kind"] == "vector"]
    assert [(j["shots"], j["method_config"]) for j in mtv] == [
        (k, {"shots": k, "per_context": 8, "contexts": k // 8}) for k in (8, 16, 32)]
    # 5 methods x 4 sizes x 3 seeds, plus M2IV 16x2 and 32x4 at 1,000 samples x 3 seeds (8x1 is the default run)
    assert len(trains) == 5 * 4 * 3 + 2 * 3 == 66
    assert len({j["name"] for j in jobs}) == len(jobs)
    cells = {(j["variant"], j["samples"], j["seed"]) for j in trains}
    for m in ("hificl", "mimic", "live", "m2iv", "lora"):
        for n in (50, 100, 300, 1000):
            assert {(m, n, seed) for seed in (0, 1, 2)} <= cells
    for v in ("m2iv-16x2", "m2iv-32x4"):
        assert {(v, 1000, seed) for seed in (0, 1, 2)} <= cells
    shared = [j for j in trains if j["variant"] == "m2iv" and j["samples"] == 1000]
    assert all(j["curves"] == ["samples", "shots"] for j in shared)
    m32 = next(j for j in trains if j["variant"] == "m2iv-32x4")
    assert m32["method_config"] == {"train_shots": 32, "teacher_sets": 4} and m32["curves"] == ["shots"]


def test_commands_are_the_library_recipe_with_only_samples_changed():
    s = full_settings()
    jobs = {j["name"]: j for j in de.plan(s)}
    tc, cmd = de.train_setup(jobs["lora.n50.seed0"], s)
    assert (tc.steps, tc.lr, tc.batch_size, tc.samples, tc.mix_fixed, tc.fixed_binding) == (2000, 5e-3, 8, 50, 0.5, True)
    assert cmd == ("mmict train --method lora --task binding --steps 2000 --lr 0.005 --batch-size 8 --samples 50 "
                   "--seed 0 --fixed-binding --mix-fixed 0.5")
    # the 300-sample HiFICL runs and the 16x2 M2IV runs are the committed claims runs (their recorded commands)
    for seed in (0, 1, 2):
        for name, claim in ((f"hificl.n300.seed{seed}", f"binding-fixed.hificl-300.seed{seed}.json"),
                            (f"m2iv-16x2.n1000.seed{seed}", f"binding-fixed.m2iv-16x2.seed{seed}.json"),
                            (f"hificl.n1000.seed{seed}", f"binding-fixed.hificl.seed{seed}.json")):
            assert de.train_setup(jobs[name], s)[1] == json.loads((CLAIMS / claim).read_text())["command"]


# -- resume and reuse -------------------------------------------------------------------------------

def _fake(job, settings_dict):
    return {"kind": job["kind"], "name": job["name"], "accuracy": 0.5, "seed": job.get("seed", 0), "episodes": 8}


def test_resume_runs_only_the_missing_json(tmp_path, monkeypatch):
    s = quick_settings()
    jobs = de.plan(s)
    for j in jobs[:-2]:
        (tmp_path / f"{j['name']}.json").write_text(json.dumps({"kind": j["kind"], "accuracy": 1.0}))
    ran = []
    monkeypatch.setattr(de, "run_one", lambda job, sd: ran.append(job["name"]) or _fake(job, sd))
    de.measure(s, tmp_path, jobs=1, log=lambda *a: None)
    assert sorted(ran) == sorted(j["name"] for j in jobs[-2:])
    assert json.loads((tmp_path / f"{jobs[0]['name']}.json").read_text())["accuracy"] == 1.0  # left alone
    ran.clear()
    de.measure(s, tmp_path, jobs=1, log=lambda *a: None)
    assert ran == []  # everything is there now


def test_reuse_only_a_byte_identical_command(tmp_path):
    s = full_settings()
    jobs = {j["name"]: j for j in de.plan(s)}
    job = jobs["hificl.n300.seed1"]
    claim = {"task": "binding (fixed)", "episodes": 300, "accuracy": 0.97, "train_seconds": 40.0, "wilson95": [0.9, 1.0],
             "command": de.train_setup(job, s)[1]}
    (tmp_path / "a.json").write_text(json.dumps(claim))
    rec = de.reused(job, s, tmp_path)
    assert rec["accuracy"] == 0.97 and rec["loss"] is None and rec["variant"] == "hificl" and rec["samples"] == 300
    assert de.reused(jobs["hificl.n300.seed2"], s, tmp_path) is None  # another seed: another command
    out = ds.summarise([rec], source="x")
    assert out["data"][0]["unchecked"] == [1] and out["reused"] == [rec["reused_from"]]
    assert "plateau not checked: seed 1" in "\n".join(ds.markdown(out)) and "taken from the binding claims" in "\n".join(ds.markdown(out))
    (tmp_path / "a.json").write_text(json.dumps({**claim, "command": claim["command"] + " "}))
    assert de.reused(job, s, tmp_path) is None


# -- the summary ------------------------------------------------------------------------------------

def _rec(variant, n, seed, acc, plateau=True, method=None, curves=("samples",), k=None, sets=None):
    return {"kind": "train", "method": method or variant, "variant": variant, "samples": n, "seed": seed, "accuracy": acc,
            "episodes": 300, "train_seconds": 10.0, "steps": 2000, "curves": list(curves), "train_shots": k,
            "teacher_sets": sets, "train_config": {"lr": 5e-3, "batch_size": 8, "mix_fixed": 0.5},
            "loss": {"plateau": plateau, "rel_change": 0.01}, "checkpoint": {"sha256": "ab" * 32}}


def _synthetic():
    runs = [{"kind": "icl", "accuracy": 0.9, "shots": 8, "episodes": 300},
            {"kind": "icl-fits", "accuracy": 0.95, "shots": [1, 2, 4, 8], "accuracies": [0.5, 0.7, 0.95, 0.9],
             "best_shots": 4, "episodes": 300}]
    vals = {("hificl", 50): [0.50, 0.62, 0.58], ("hificl", 1000): [0.99, 0.98, 1.0],
            ("lora", 50): [0.80, 0.95, 0.9], ("lora", 1000): [0.9, 0.9, 0.9]}
    for (m, n), accs in vals.items():
        runs += [_rec(m, n, i, a, plateau=not (m == "lora" and n == 50 and i == 1)) for i, a in enumerate(accs)]
    for k, sets, accs in ((8, 1, [0.9, 0.92, 0.94]), (16, 2, [0.97, 0.99, 0.98])):
        v = "m2iv" if k == 8 else f"m2iv-{k}x{sets}"
        runs += [_rec(v, 1000, i, a, method="m2iv", k=k, sets=sets,
                      curves=("samples", "shots") if k == 8 else ("shots",)) for i, a in enumerate(accs)]
    return runs, vals


def test_summary_mean_interval_and_verdicts_by_plain_recomputation():
    from scipy import stats

    runs, vals = _synthetic()
    out = ds.summarise(runs, source="x")
    rows = {(r["method"], r["samples"]): r for r in out["data"]}
    assert set(rows) == set(vals) | {("m2iv", 1000)}
    for key, accs in vals.items():
        mean, sd = statistics.mean(accs), statistics.stdev(accs)
        half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
        assert rows[key]["mean"] == pytest.approx(mean, abs=1e-4)
        assert rows[key]["ci95"] == pytest.approx([max(mean - half, 0.0), min(mean + half, 1.0)], abs=1e-4)  # cut to [0, 1]
        assert rows[key]["values"] == pytest.approx(accs, abs=1e-4)
    # vs ICL 8-shot 0.9: hificl@50 interval entirely below; hificl@1000 entirely above; lora@1000 ties at every seed
    assert rows["hificl", 50]["vs_icl8"] == "does not hold" and rows["hificl", 1000]["vs_icl8"] == "holds"
    assert rows["lora", 1000]["vs_icl8"] == "holds" and rows["lora", 50]["vs_icl8"] == "inconclusive"
    assert out["reaches_icl8_at"] == {"hificl": 1000, "lora": 1000, "m2iv": None}
    assert rows["lora", 50]["not_plateaued"] == [1] and rows["hificl", 50]["not_plateaued"] == []
    shots = {r["train_shots"]: r for r in out["m2iv_shots"]}
    assert set(shots) == {8, 16}
    # M2IV 16x2: 0.98 +- 4.303 * 0.01 / sqrt(3) = [0.955, 1.005], above the best ICL that fits (0.95): holds;
    # M2IV 8x1: 0.92 +- 0.0497 = [0.870, 0.970] around it: inconclusive
    assert shots[16]["vs_icl_best"] == "holds" and shots[8]["vs_icl_best"] == "inconclusive"
    md = "\n".join(ds.markdown(out))
    assert "⚠ no plateau: seed 1" in md and "at k = 4" in md
    assert "`abababababababab`" in md  # the checkpoint the runs were measured on


def test_mtv_rows_and_wilson_verdicts_by_plain_recomputation():
    from scipy import stats

    def wilson(p, n=300, z=stats.norm.ppf(0.975)):  # the score interval, written out
        c = (p + z * z / (2 * n)) / (1 + z * z / n)
        h = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return [c - h, c + h]

    runs, _ = _synthetic()  # 8-shot ICL 0.90, best ICL that fits 0.95 (300 episodes)
    for r in runs:
        if r["kind"] in ("icl", "icl-fits"):
            r["wilson95"] = wilson(r["accuracy"])
    for k, acc in ((8, 0.30), (16, 0.93), (32, 0.95)):
        runs.append({"kind": "vector", "method": "mtv", "variant": f"mtv-{k}x{k // 8}", "shots": k, "episodes": 300,
                     "method_config": {"shots": k, "per_context": 8, "contexts": k // 8}, "accuracy": acc,
                     "wilson95": wilson(acc), "seed": 0})
    out = ds.summarise(runs, source="x")
    rows = {r["shots"]: r for r in out["mtv_shots"]}
    assert [(r["shots"], r["contexts"], r["per_context"]) for r in out["mtv_shots"]] == [(8, 1, 8), (16, 2, 8), (32, 4, 8)]
    # 0.30 [0.252, 0.353] is below both ICL intervals; 0.93 [0.895, 0.954] overlaps both; 0.95 equals the best
    assert wilson(0.30)[1] < wilson(0.90)[0] and wilson(0.93)[0] < wilson(0.95)[1] and wilson(0.93)[1] > wilson(0.90)[0]
    assert (rows[8]["vs_icl_best"], rows[8]["vs_icl8"]) == ("does not hold", "does not hold")
    assert (rows[16]["vs_icl_best"], rows[16]["vs_icl8"]) == ("inconclusive", "inconclusive")
    assert rows[32]["vs_icl_best"] == "holds"  # the same accuracy: a tie satisfies >=
    md = "\n".join(ds.markdown(out))
    assert "| 32 | 4 | 8 | 0.950 [" in md and "Many-shot: MTV" in md
    g = ds.figures(out)["fig_shots.html"]
    m = next(t for t in g.data if t.name == "MTV (demos read at inference)")
    assert list(m.x) == [8, 16, 32] and list(m.y) == [0.30, 0.93, 0.95]
    assert list(m.error_y.array) == pytest.approx([wilson(a)[1] - a for a in (0.30, 0.93, 0.95)])


def test_vector_run_equals_its_recorded_mmict_compare_command():
    """A training-free run's accuracy is what the `mmict compare` line it records prints (the same test
    episodes, read through the compare path)."""
    from mmict_core.backbones import load_backbone
    from mmict_core.evaluate.compare import compare, parse_method_specs

    s = quick_settings(eval_episodes=12)
    job = next(j for j in de.plan(s) if j["name"] == "mtv-16x2")
    rec = de.run_one(job, s.as_dict())
    assert rec["command"] == ("mmict compare --task binding --fixed-binding --episodes 12 "
                              "--methods mtv:16@per_context=8@contexts=2")
    spec = rec["command"].split("--methods ")[1]
    rows = compare(load_backbone("teaching"), "binding", parse_method_specs(spec), episodes=12, seed=0,
                   fixed_binding=True)
    assert rows[0]["accuracy"] == pytest.approx(rec["accuracy"], abs=1e-9)
    assert rec["wilson95"][0] <= rec["accuracy"] <= rec["wilson95"][1]


def test_a_cell_with_fewer_seeds_than_planned_says_so():
    runs, _ = _synthetic()
    runs = [r for r in runs if not (r.get("variant") == "hificl" and r.get("samples") == 50 and r["seed"] > 0)]
    md = "\n".join(ds.markdown(ds.summarise(runs, source="x")))
    assert "| hificl | 0.500 [0.500, 0.500] (1 of 3 seeds so far) |" in md
    assert "(1 of 3 seeds so far)" not in md.split("| hificl |")[1].split("\n")[0].split("|")[2]  # 1,000 samples: all 3


def test_summary_of_nothing_says_how_to_measure():
    out = ds.summarise([], source="benchmarks/results/data_efficiency")
    md = "\n".join(ds.markdown(out))
    assert "Not measured yet" in md and "python -m benchmarks.data_efficiency" in md
    assert ds.figures(out) == {}


# -- the plateau check ------------------------------------------------------------------------------

def test_plateau_on_synthetic_loss_curves():
    flat = [2.0 * math.exp(-i / 50) + 0.3 for i in range(1000)]  # converged long before the last 20%
    s = ds.loss_summary(flat)
    assert s["plateau"] and s["window"] == 100 and s["first"] == pytest.approx(2.3)
    assert s["last_mean"] == pytest.approx(statistics.mean(flat[-100:]))
    assert s["prev_mean"] == pytest.approx(statistics.mean(flat[-200:-100]))
    falling = [2.0 - 0.0015 * i for i in range(1000)]  # still falling: last window ~10% below the previous
    r = ds.loss_summary(falling)
    assert not r["plateau"]
    assert r["rel_change"] == pytest.approx(abs(statistics.mean(falling[-100:]) - statistics.mean(falling[-200:-100]))
                                            / statistics.mean(falling[-200:-100]))
    tiny = [0.004] * 900 + [0.002] * 100  # relative change 50%, absolute 0.002 nats: a loss at zero
    assert ds.loss_summary(tiny)["plateau"]
    with pytest.raises(ValueError, match="at least 2"):
        ds.loss_summary([1.0])


# -- the figures ------------------------------------------------------------------------------------

def test_figures_one_trace_per_method_and_the_icl_lines():
    runs, _ = _synthetic()
    figs = ds.figures(ds.summarise(runs, source="x"))
    assert set(figs) == {"fig_data_efficiency.html", "fig_shots.html"}
    f = figs["fig_data_efficiency.html"]
    lines = [t for t in f.data if t.mode == "lines+markers"]
    assert sorted(t.name for t in lines) == ["hificl", "lora", "m2iv"]
    icl = [t for t in f.data if t.name == "ICL 8-shot"]
    assert len(icl) == 1 and set(icl[0].y) == {0.9}
    assert f.layout.xaxis.type == "log"
    hif = next(t for t in lines if t.name == "hificl")
    assert list(hif.x) == [50, 1000]
    assert list(hif.y) == pytest.approx([statistics.mean([0.5, 0.62, 0.58]), statistics.mean([0.99, 0.98, 1.0])], abs=1e-4)
    g = figs["fig_shots.html"]
    names = [t.name for t in g.data]
    assert "M2IV (teacher demos)" in names and "best ICL that fits (4-shot)" in names and "ICL 8-shot" in names
    m = next(t for t in g.data if t.name == "M2IV (teacher demos)")
    assert list(m.x) == [8, 16]


# -- end to end at toy settings ---------------------------------------------------------------------

def test_three_step_run_end_to_end_in_two_workers(tmp_path):
    s = quick_settings(data_methods=("lora",), data_samples=(8,), data_seeds=(0,), shot_m2iv=(), eval_episodes=4)
    jobs = de.plan(s)
    assert [j["name"] for j in jobs] == ["icl", "icl-fits", "lora.n8.seed0"]  # shot_m2iv=(): no many-shot runs
    runs = de.measure(s, tmp_path, jobs=2, log=lambda *a: None)  # 2 worker processes (spawned)
    rec = next(r for r in runs if r["kind"] == "train")
    assert rec["steps"] == 3 and rec["loss"]["steps"] == 3 and rec["train_config"]["samples"] == 8
    assert "--steps 3" in rec["command"] and "--batch-size 2" in rec["command"] and "--samples 8" in rec["command"]
    assert 0.0 <= rec["accuracy"] <= 1.0 and rec["episodes"] == 4
    assert len(rec["checkpoint"]["sha256"]) == 64
    out = ds.summarise(runs, source=str(tmp_path), seeds=(0,))
    assert out["data"][0]["values"] == [pytest.approx(rec["accuracy"], abs=1e-4)]
    assert out["icl_fits"]["shots"] == [1, 2, 4, 8]


def test_only_patterns_pick_the_runs(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(de, "run_one", lambda job, sd: ran.append(job["name"]) or _fake(job, sd))
    de.measure(full_settings(), tmp_path, only=("lora.n50.seed0", "icl*"), log=lambda *a: None)
    assert sorted(ran) == ["icl", "icl-fits", "lora.n50.seed0"]


# -- the full benchmark's section 4 reads the committed JSON; --report rewrites section 4 only ------------------

def test_full_section_reads_the_json_and_report_rewrite(tmp_path):
    runs, _ = _synthetic()
    data = tmp_path / "runs"
    data.mkdir()
    for i, r in enumerate(runs):
        (data / f"{i}.json").write_text(json.dumps(r))
    section = de.run(full_settings(data_dir=str(data)))  # an absolute data_dir; nothing is trained
    assert section["runs"] == len(runs) and not section["quick"]
    assert {(r["method"], r["samples"]) for r in section["data"]} == {("hificl", 50), ("hificl", 1000), ("lora", 50),
                                                                      ("lora", 1000), ("m2iv", 1000)}
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "fig_shots.html").write_text("stale")
    (rep / "fig_other.html").write_text("other section")
    (rep / "report.json").write_text(json.dumps({"meta": {"quick": False, "started": "2026-12-01 00:00:00", "wall_s": 1.0,
                                                          "torch": "x", "threads": 1, "cpu_count": 2,
                                                          "training_running": "no"},
                                                 "settings": {}, "figures": ["fig_other.html", "fig_shots.html"],
                                                 "data_efficiency": {"data": "old 120-step rows"}}))
    written = de.write_report(rep, section)
    assert written == ["fig_data_efficiency.html", "fig_shots.html"]
    saved = json.loads((rep / "report.json").read_text())
    assert saved["data_efficiency"]["runs"] == len(runs) and saved["figures"] == ["fig_other.html"] + written
    assert (rep / "fig_other.html").read_text() == "other section" and (rep / "fig_shots.html").read_text() != "stale"
    md = (rep / "report.md").read_text()
    assert "## 4. Data efficiency and many-shot" in md and "old 120-step" not in md
    de.write_report(rep, ds.summarise([], source="nowhere"))  # no runs: the stale figures go
    assert not (rep / "fig_shots.html").exists() and json.loads((rep / "report.json").read_text())["figures"] == ["fig_other.html"]


def test_committed_section4_is_the_committed_runs():
    """report.json's section 4 is the summary of the committed per-run JSON (regenerate it with
    `python -m benchmarks.data_efficiency --summary --report benchmarks/results` after adding runs)."""
    s = full_settings()
    folder = ROOT / s.data_dir
    fresh = json.loads(json.dumps(ds.summarise(ds.load_runs(folder), source=s.data_dir, seeds=s.data_seeds)))
    saved = json.loads((ROOT / "benchmarks" / "results" / "report.json").read_text())["data_efficiency"]
    assert saved["runs"] == fresh["runs"], "report.md section 4 is stale: new run JSON since it was written"
    for key in ("data", "m2iv_shots", "mtv_shots"):
        assert [(r.get("variant"), r.get("samples"), r.get("shots")) for r in saved[key]] == \
               [(r.get("variant"), r.get("samples"), r.get("shots")) for r in fresh[key]]
        assert [r.get("mean", r.get("accuracy")) for r in saved[key]] == \
               pytest.approx([r.get("mean", r.get("accuracy")) for r in fresh[key]], abs=1e-6)
