"""The benchmark helpers against independent arithmetic, the PASS/FAIL logic, and a --quick run
that must produce a report with every section."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is a top-level folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import report as rep  # noqa: E402
from benchmarks.backbone import weight_bytes  # noqa: E402
from benchmarks.settings import full_settings, quick_settings  # noqa: E402
from benchmarks.stats import Goal, peak_rss_delta, ratio, ratios, round_robin, summarize, timed  # noqa: E402


# -- summaries, ratios ----------------------------------------------------------------------------

def test_summarize_min_median():
    s = summarize([0.3, 0.1, 0.2, 0.5])
    assert s == {"min": 0.1, "median": (0.2 + 0.3) / 2, "n": 4}
    assert summarize([4, 1, 3]) == {"min": 1.0, "median": 3.0, "n": 3}
    assert summarize([7]) == {"min": 7.0, "median": 7.0, "n": 1}
    with pytest.raises(ValueError):
        summarize([])


def test_ratio_and_ratios():
    assert ratio(6.0, 3.0) == 2.0 and ratio(1, 4) == 0.25
    assert ratio(1.0, 0.0) is None and ratio(None, 1.0) is None and ratio(1.0, None) is None
    assert ratio(float("nan"), 1.0) is None and ratio(1.0, -2.0) is None
    sums = {"ref": {"median": 2.0, "min": 1.0}, "a": {"median": 3.0, "min": 4.0}}
    assert ratios(sums, "ref") == {"ref": 1.0, "a": 1.5}
    assert ratios(sums, "ref", "min") == {"ref": 1.0, "a": 4.0}


# -- timing ---------------------------------------------------------------------------------------

def test_round_robin_interleaves_and_discards_warmup():
    order: list[tuple[str, int]] = []

    def task(label, value):
        def t(r):
            order.append((label, r))
            return value
        return t

    out = round_robin({"a": task("a", 1.0), "b": task("b", 2.0), "c": task("c", 3.0)}, rounds=4, warmup=1)
    assert out == {"a": [1.0] * 4, "b": [2.0] * 4, "c": [3.0] * 4}
    assert len(order) == 3 * 5  # one warm-up round + 4
    rounds = [order[i:i + 3] for i in range(0, len(order), 3)]
    for chunk in rounds:  # every round runs each configuration exactly once (interleaved, not blocked)
        assert sorted(label for label, _ in chunk) == ["a", "b", "c"]
    firsts = [chunk[0][0] for chunk in rounds[1:]]
    assert len(set(firsts)) == 3  # the order rotates: no configuration always goes first
    with pytest.raises(ValueError):
        round_robin({"a": task("a", 1.0)}, rounds=0)


def test_timed_leaves_setup_out():
    t = timed(lambda: None, setup=lambda: time.sleep(0.05))
    assert t(0) < 0.04
    assert timed(lambda: time.sleep(0.02))(0) >= 0.015


def test_peak_rss_delta_sees_an_allocation():
    def alloc():
        x = bytearray(64 * 2**20)
        x[::4096] = b"\1" * len(x[::4096])  # touch every page
        return len(x)

    delta = peak_rss_delta(alloc)
    if delta is None:
        pytest.skip("no /proc peak-RSS reset on this system")
    assert 56 * 2**20 <= delta <= 200 * 2**20


def test_weight_bytes_counts_each_tensor_once():
    lin = torch.nn.Linear(10, 6)  # 10*6 weights + 6 biases, fp32
    assert weight_bytes(lin) == (10 * 6 + 6) * 4
    tied = torch.nn.Module()
    tied.a = torch.nn.Embedding(5, 3)
    tied.b = torch.nn.Linear(3, 5, bias=False)
    tied.b.weight = tied.a.weight  # tied: one tensor
    tied.register_buffer("buf", torch.zeros(7, dtype=torch.float16))
    assert weight_bytes(tied) == 5 * 3 * 4 + 7 * 2


# -- goals ----------------------------------------------------------------------------------------

def test_goal_boundaries():
    assert Goal("x", 1.15, "<=", 1.15).passed and not Goal("x", 1.1500001, "<=", 1.15).passed
    assert Goal("x", 3.0, ">=", 3.0).passed and not Goal("x", 2.99, ">=", 3.0).passed
    assert not Goal("x", None, "<=", 1.0).passed and Goal("x", None, "<=", 1.0).status == "FAIL"
    assert not Goal("x", float("nan"), ">=", 0.0).passed
    assert Goal("x", 0.1, "<=", 0.2).line().startswith("[PASS]")
    with pytest.raises(ValueError):
        Goal("x", 1.0, "<", 2.0)


def _inf_row(label, kind, median, tokens=10, fwd=None):
    q = {"min": median, "median": median, "n": 3}
    f = {"min": fwd or median, "median": fwd or median, "n": 3}
    return {"label": label, "kind": kind, "shots": 0, "lm_tokens": tokens, "query_s": q, "forward_s": f,
            "query_ratio_median": median / 0.010, "forward_ratio_median": (fwd or median) / 0.010}


def test_goals_from_a_synthetic_report():
    report = {
        "inference": {"teaching": {"rows": [
            _inf_row("0-shot", "reference", 0.010),
            _inf_row("ICL 8-shot", "icl", 0.036, tokens=130),
            _inf_row("HiFICL", "adapter", 0.011),  # 1.10x: PASS
            _inf_row("MimIC", "adapter", 0.0116),  # 1.16x: FAIL
            _inf_row("HiFICL (split path = before)", "adapter (reference path)", 0.02),  # not a goal
            _inf_row("MMICT 4 demos", "adapter (demos)", 0.02),  # reads demos: not a 0-demo goal
        ]}},
        "training": {"rows": [{"method": "hificl", "step_s": {"median": 0.02}, "flops": 10, "train_shots": 0},
                              {"method": "mimic", "step_s": {"median": 0.1}, "flops": 40, "train_shots": 4}]},
        "backbone": {"configs": [{"name": "a", "fp16_lm_bytes": 200, "rows": [{"quant": "4bit", "lm_vs_fp16": 0.36, "lm_weight_bytes": 72}]},
                                 {"name": "b", "fp16_lm_bytes": 200, "rows": [{"quant": "4bit", "lm_vs_fp16": 0.30, "lm_weight_bytes": 60}]}]},
    }
    got = {g.name: g for g in rep.goals(report)}
    status = {n: g.status for n, g in got.items()}
    assert status["HiFICL at 0 demos: per-query latency / plain 0-shot (median)"] == "PASS"
    assert status["MimIC at 0 demos: per-query latency / plain 0-shot (median)"] == "FAIL"
    assert not any("split" in n or "MMICT" in n for n in got)
    icl = got["ICL 8-shot / HiFICL at 0 demos: per-query latency (median)"]
    assert math.isclose(icl.value, 0.036 / 0.011) and icl.status == "PASS"  # 3.27 >= 3
    tr = got["HiFICL training step / MimIC's (time, median)"]
    assert math.isclose(tr.value, 0.2) and tr.status == "PASS"  # exactly at the limit
    assert status["[a] 4-bit LM weights / fp16 (2 B per LM parameter)"] == "FAIL"
    assert status["[b] 4-bit LM weights / fp16 (2 B per LM parameter)"] == "PASS"
    # sections that did not run are FAIL ('not measured'), never silently absent
    empty = rep.goals({})
    assert len(empty) == 4 and all(g.status == "FAIL" and g.value is None for g in empty)


def test_quick_settings():  # section 4's plan: tests/test_data_efficiency.py
    assert quick_settings().quick and quick_settings(jobs=3).jobs == 3
    assert not full_settings().quick and full_settings().data_train == {}  # the full runs: the library's budget


# -- the --quick run ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    from benchmarks.cli import run

    out = tmp_path_factory.mktemp("bench")
    report = run(quick=True, out=out, log=lambda *a: None)
    return out, report


def test_quick_run_writes_every_section(quick_report):
    out, report = quick_report
    assert report["meta"]["errors"] == {}
    data = json.loads((out / "report.json").read_text())
    for section in rep.SECTIONS:
        assert section in data and data[section], section
    md = (out / "report.md").read_text()
    for header in ("## Goals", "## 1. Inference", "## 2. Training", "## 3. Backbone", "## 4. Data efficiency",
                   "## 5. HiFICL hot path", "## Settings"):
        assert header in md
    for fig in data["figures"]:
        assert (out / fig).is_file()
    assert {"fig_inference.html", "fig_training.html", "fig_backbone.html", "fig_data_efficiency.html", "fig_shots.html",
            "fig_hotpath.html"} <= set(data["figures"])
    # every inference configuration asked for is there, each with its ratio to the 0-shot query
    labels = [r["label"] for r in data["inference"]["teaching"]["rows"]]
    for want in ("0-shot", "HiFICL", "MimIC", "LIVE", "M2IV", "LoRA merged", "LoRA unmerged"):
        assert want in labels
    assert any(lab.startswith("ICL ") for lab in labels) and any(lab.startswith("MMICT") for lab in labels)
    rows = {r["label"]: r for r in data["inference"]["teaching"]["rows"]}
    ref = rows["0-shot"]["query_s"]["median"]
    for r in rows.values():
        assert math.isclose(r["query_ratio_median"], r["query_s"]["median"] / ref, rel_tol=1e-9)
        assert r["query_s"]["min"] <= r["query_s"]["median"]
    assert rows["ICL 8-shot"]["lm_tokens"] > rows["0-shot"]["lm_tokens"] == rows["HiFICL"]["lm_tokens"]
    methods = {r["method"] for r in data["training"]["rows"]}
    assert {"hificl", "mimic", "live", "m2iv", "lora", "mmict"} <= methods
    assert all(r["flops"] > 0 and r["trainable"] > 0 for r in data["training"]["rows"])
    assert data["hotpath"]["max_abs_logit_diff"] < 1e-3 and data["hotpath"]["kv_products_per_generation"] == 1
    # the Compare path: vision-encoder runs before (two assemblies per method) and after (one; cached: fewer)
    n = len(data["compare"]["methods"])
    runs = {r["label"]: r["encoder_runs"] for r in data["compare"]["rows"]}
    assert runs == {"compare before": 2 * n, "compare after (no cache)": n, "compare after (cold cache)": 2,
                    "compare after (warm cache)": 0, "demo click before": 2, "demo click after": 0}
    assert "## 6. Compare path" in md


def test_report_records_checkpoint_commit_and_machine(quick_report):
    import hashlib
    import subprocess

    from mmict_core.backbones import ASSETS_DIR

    out, _ = quick_report
    meta = json.loads((out / "report.json").read_text())["meta"]
    assert meta["checkpoint"]["sha256"] == hashlib.sha256((ASSETS_DIR / "model.safetensors").read_bytes()).hexdigest()
    assert meta["checkpoint"]["path"] == "assets/teaching-vlm/model.safetensors"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert meta["git"]["commit"] == head and isinstance(meta["git"]["dirty"], bool)
    assert meta["machine"]["cores"] > 0 and meta["machine"]["torch"] == torch.__version__ and meta["machine"]["cpu_model"]
    assert meta["checkpoint"]["sha256"] in (out / "report.md").read_text()


# -- the README's benchmark table is generated from the committed report.json ---------------------

def test_readme_benchmark_table_matches_the_committed_report():
    from benchmarks import readme

    report = json.loads(readme.REPORT.read_text())
    assert readme.current(readme.README.read_text()) == readme.block(report), \
        "README.md's benchmark table differs from benchmarks/results/report.json: run `python -m benchmarks report --readme`"


def test_committed_report_measured_the_shipped_checkpoint():
    """A report of another checkpoint is stale (issue 23): re-run `make bench` when the model changes."""
    import hashlib

    from benchmarks import readme
    from mmict_core.backbones import ASSETS_DIR

    meta = json.loads(readme.REPORT.read_text())["meta"]
    assert meta["checkpoint"]["sha256"] == hashlib.sha256((ASSETS_DIR / "model.safetensors").read_bytes()).hexdigest(), \
        "benchmarks/results/report.json measured another checkpoint: run `make bench`"


def test_readme_block_generator(tmp_path):
    from benchmarks import readme

    goals = [Goal("HiFICL at 0 demos", 1.0987, "<=", 1.15), Goal("ICL 8-shot / HiFICL", None, ">=", 3.0)]
    report = {"meta": {"quick": False, "started": "2026-12-06 20:00:00", "threads": 1, "training_running": "no", "wall_s": 300.4,
                       "machine": {"cpu_model": "Some CPU", "cores": 2, "torch": "2.x"},
                       "checkpoint": {"path": "assets/x.safetensors", "sha256": "ab" * 32},
                       "git": {"commit": "c" * 40, "dirty": False}},
              "goals": [g.as_dict() for g in goals]}
    b = readme.block(report)
    assert "| HiFICL at 0 demos | 1.099 | <= 1.15 | PASS |" in b and "| ICL 8-shot / HiFICL | not measured | >= 3 | FAIL |" in b
    assert "**1 of 2 goals PASS**" in b and "sha256 `" + "ab" * 8 + "`" in b and "commit `" + "c" * 12 + "`" in b
    path, js = tmp_path / "README.md", tmp_path / "report.json"
    path.write_text(f"intro\n\n{readme.BEGIN}\nstale\n{readme.END}\n\nafter\n")
    js.write_text(json.dumps(report))
    assert readme.main(["--check", "--file", str(path), "--json", str(js)]) == 1
    assert readme.main(["--readme", "--file", str(path), "--json", str(js)]) == 0
    text = path.read_text()
    assert text.startswith("intro\n\n") and text.endswith("\n\nafter\n") and readme.current(text) == b
    assert readme.main(["--check", "--file", str(path), "--json", str(js)]) == 0
    path.write_text(text.replace("1.099", "1.050"))  # a hand edit of a number
    assert readme.main(["--check", "--file", str(path), "--json", str(js)]) == 1
    path.write_text("no markers here")
    with pytest.raises(ValueError, match="exactly one benchmark block"):
        readme.main(["--check", "--file", str(path), "--json", str(js)])


def test_quick_report_goals_agree_with_its_numbers(quick_report):
    out, _ = quick_report
    data = json.loads((out / "report.json").read_text())
    recomputed = rep.goals(data)
    assert [g["name"] for g in data["goals"]] == [g.name for g in recomputed]
    for saved, g in zip(data["goals"], recomputed):
        assert saved["status"] == g.status
        if g.value is not None:
            assert saved["status"] == ("PASS" if (g.value <= g.threshold if g.op == "<=" else g.value >= g.threshold) else "FAIL")
    md = (out / "report.md").read_text()
    for g in recomputed:
        assert f"| **{g.status}** | {g.name} |" in md


# -- real-class backbone sizes under a RAM budget -------------------------------------------------

def test_fp32_peak_and_budget_plan_by_hand():
    from benchmarks.backbone import fp32_peak_bytes, max_parameters_under, plan_under_budget

    # peak = base + factor * 4 B per parameter: 100 + 2 * 4 * 10 = 180
    assert fp32_peak_bytes(10, factor=2, base=100) == 180
    assert max_parameters_under(500, factor=2, base=100) == 50  # (500 - 100) // 8
    assert max_parameters_under(99, factor=2, base=100) == 0
    plan = plan_under_budget({"s": 10, "m": 50, "l": 51}, 500, factor=2, base=100)
    assert [(p["label"], p["fp32_peak_estimate"], p["fits"], p["largest"]) for p in plan] == [
        ("s", 180, True, False), ("m", 500, True, True), ("l", 508, False, False)]
    tie = plan_under_budget({"a": 50, "b": 50, "c": 9}, 500, factor=2, base=100)
    assert [p["largest"] for p in tie] == [True, False, False]
    assert not any(p["fits"] or p["largest"] for p in plan_under_budget({"x": 1}, 99, factor=2, base=100))
    # the defaults: 1 GiB + 5 x 4 B per parameter against 8 GiB -> (7 * 2**30) // 20 parameters
    gib = 2**30
    assert fp32_peak_bytes(100_000_000) == gib + 2_000_000_000
    assert max_parameters_under(8 * gib) == 7 * gib // 20 == 375_809_638
    assert fp32_peak_bytes(375_809_638) <= 8 * gib < fp32_peak_bytes(375_809_639)


def test_tiny_config_lm_size_overrides():
    from mmict_core.backbones.tiny import tiny_config, tiny_name, tiny_tokenizer

    tok = tiny_tokenizer()
    base = tiny_config("qwen2-vl", tok).text_config
    assert (base.hidden_size, base.num_attention_heads, base.num_key_value_heads, base.intermediate_size,
            base.num_hidden_layers) == (64, 4, 2, 128, 2)
    assert base.rope_parameters["mrope_section"] == [4, 2, 2]
    big = tiny_config("qwen2-vl", tok, lm_hidden=512, lm_layers=3, lm_heads=8, lm_intermediate=1024)
    t = big.text_config
    assert (t.hidden_size, t.num_attention_heads, t.num_key_value_heads, t.intermediate_size, t.num_hidden_layers) == (
        512, 8, 4, 1024, 3)  # kv heads default to half the query heads, as the toy size
    assert t.rope_parameters["mrope_section"] == [16, 8, 8]  # head_dim 64: 32 rotary pairs, split as 4:2:2
    assert big.vision_config.hidden_size == 512  # the merger's output feeds the LM
    assert tiny_config("llava", tok, lm_hidden=256, lm_heads=4, lm_kv_heads=4).text_config.num_key_value_heads == 4
    assert tiny_name("llava") == "tiny-llava" and tiny_name("llava", lm_hidden=256, lm_layers=4) == "tiny-llava-256x4"
    with pytest.raises(TypeError):
        tiny_config("llava", tok, hidden=128)
    with pytest.raises(ValueError):
        tiny_config("llava", tok, lm_hidden=100, lm_heads=8)


def test_real_parameters_one_layer_by_hand():
    """The meta-device count equals the built model's; one more decoder layer adds, by hand (h = 128,
    4 query heads of 32, 2 key/value heads, intermediate 256): q, o h*h each; k, v h*64 each; gate, up,
    down h*256 each; 2 RMSNorms h -> 147,712; Qwen2 adds the q/k/v biases (128 + 64 + 64)."""
    from benchmarks.backbone import real_parameters
    from mmict_core.backbones.tiny import tiny_parts

    sizes = dict(lm_hidden=128, lm_heads=4, lm_kv_heads=2, lm_intermediate=256)
    h = 128
    per_layer = 2 * h * h + 2 * h * 64 + 3 * h * 256 + 2 * h
    assert per_layer == 147_712
    for kind, bias in (("llava", 0), ("qwen2-vl", h + 2 * 64)):
        two, three = real_parameters(kind, dict(sizes, lm_layers=2)), real_parameters(kind, dict(sizes, lm_layers=3))
        assert three - two == per_layer + bias
        model = tiny_parts(kind, lm_layers=2, **sizes)[0]
        assert two == sum(p.numel() for p in model.parameters())


def test_real_config_settings_fit_the_budget():
    from benchmarks.backbone import plan_under_budget, real_parameters

    for s, most in ((full_settings(), 200_000_000), (quick_settings(), 5_000_000)):
        budget = int(s.ram_budget_gb * 2**30)
        kinds = [kind for kind, _ in s.real_configs]
        assert {"llava", "qwen2-vl"} <= set(kinds)
        for kind, candidates in s.real_configs:
            plan = plan_under_budget({str(i): real_parameters(kind, c) for i, c in enumerate(candidates)}, budget)
            fitting = [p for p in plan if p["fits"]]
            assert fitting and sum(p["largest"] for p in plan) == 1
            assert max(p["parameters"] for p in fitting) <= most  # the time share: full ~90 s, --quick tiny
            assert not plan[-1]["fits"]  # the 7B shape is planned and skipped before it is built


def test_teaching_latency_interleaves_two_checkpoints(tmp_path):
    from benchmarks import teaching_latency as tl
    from mmict_core.backbones import TeachingVLM

    for name, seed in (("a", 0), ("b", 1)):
        TeachingVLM.create(seed=seed, vision_layers=1, vision_intermediate=32).save(tmp_path / name)
    out = tl.measure(str(tmp_path / "b"), str(tmp_path / "a"), rounds=3, episodes=2, new_tokens=2)
    s = out["query_s"]
    assert set(s) == {"base", "candidate"} and s["base"]["n"] == s["candidate"]["n"] == 3
    assert out["ratio_median"] == pytest.approx(s["candidate"]["median"] / s["base"]["median"])
    assert out["goal"]["value"] == out["ratio_median"] and out["goal"]["threshold"] == tl.GOAL
    assert out["goal"]["passed"] == (out["ratio_median"] <= tl.GOAL)


def test_real_size_lines_name_each_run_or_say_it_was_not_run(tmp_path):
    from benchmarks.report import real_size_lines

    text = "\n".join(real_size_lines(tmp_path))
    assert "On this CPU (`bash benchmarks/cpu_realsize.sh`): not run." in text and "**not run**" in text
    (tmp_path / "realsize_cpu").mkdir()
    goals = [{"passed": True}, {"passed": False}, {"passed": True}]
    (tmp_path / "realsize_cpu" / "realsize_cpu.json").write_text(json.dumps({"goals": goals}))
    (tmp_path / "gpu").mkdir()
    (tmp_path / "gpu" / "gpu_tiny.json").write_text(json.dumps({"goals": goals}))  # a toy CPU run: not a GPU result
    assert "**not run**" in "\n".join(real_size_lines(tmp_path))
    (tmp_path / "gpu" / "gpu_full.json").write_text(json.dumps({"goals": goals[:2], "environment": {"device": "NVIDIA H100"}}))
    text = "\n".join(real_size_lines(tmp_path))
    assert "2 of 3 goals PASS" in text and "On a GPU, NVIDIA H100" in text and "1 of 2 goals PASS" in text
    assert "**not run**" not in text
