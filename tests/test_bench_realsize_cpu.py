"""benchmarks/cpu_realsize.sh (benchmarks.cpu_realsize + cpu_realsize_report + realsize.scaled): the two new
real-class shapes against published parameter counts, the CPU scaling rule against hand counts, the random
KV-cache decode against a real prefill (and a full forward), the trend fits against a plain recomputation,
the budget skips, and the README block against its JSON.  Toy sizes only; no timing is asserted."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("bitsandbytes")

from benchmarks import cpu_realsize as C  # noqa: E402
from benchmarks import cpu_realsize_report as R  # noqa: E402
from benchmarks import realsize  # noqa: E402
from benchmarks.stats import linear_fit  # noqa: E402
from mmict_core.backbones.tiny import tiny_tokenizer  # noqa: E402


def decoder_params(t: dict) -> int:
    """Hand count of a Llama-style decoder: embeddings + per layer (q, k, v, o [+ q/k/v biases for the Qwen2
    text models], gate/up/down, 2 norms) + final norm."""
    h, L, heads, inter = t["hidden_size"], t["num_hidden_layers"], t["num_attention_heads"], t["intermediate_size"]
    kv_width = t["num_key_value_heads"] * 128  # every shape here keeps the published head size 128
    per_layer = 2 * h * h + 2 * h * kv_width + 3 * h * inter + 2 * h
    if t["model_type"] in ("qwen2", "qwen2_vl_text"):
        per_layer += h + 2 * kv_width
    return t["vocab_size"] * h + L * per_layer + h


def decoder_of(model):
    dec = model.get_decoder()
    return dec if hasattr(dec, "layers") else dec.get_decoder()


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_new_full_size_shapes_match_published_counts(tok):
    sh = realsize.shape("qwen2-vl-7b", "full", tok)
    m = realsize.meta_model(realsize.make_config(sh, tok))
    assert type(m).__name__ == "Qwen2VLForConditionalGeneration"
    lm = sum(p.numel() for p in decoder_of(m).parameters())
    assert lm == decoder_params(sh["text"]) == realsize.lm_formula(sh["text"])
    head = m.get_output_embeddings().weight.numel()
    assert lm + head == 7_615_616_512  # Qwen2-7B: 7.62 B with its untied lm_head
    assert 670e6 <= sum(p.numel() for p in m.model.visual.parameters()) <= 680e6  # the paper's 675 M ViT
    sh = realsize.shape("instructblip-vicuna-7b", "full", tok)
    m = realsize.meta_model(realsize.make_config(sh, tok))
    assert type(m).__name__ == "InstructBlipForConditionalGeneration"
    lm = sum(p.numel() for p in decoder_of(m).parameters())
    assert lm == decoder_params(sh["text"])
    assert lm + m.get_output_embeddings().weight.numel() == 6_738_415_616 + 2 * 4096  # LLaMA-7B + Vicuna's pad token
    total = sum(p.numel() for p in m.parameters()) + (30523 - len(tok)) * 768  # Q-Former with BERT's vocabulary
    assert 7.90e9 <= total <= 7.92e9  # instructblip-vicuna-7b: 7.91 B
    assert m.config.num_query_tokens == sh["image_tokens"] == 32


@pytest.mark.parametrize("spec", C.MODELS, ids=[m[0] for m in C.MODELS])
def test_scaling_rule(tok, spec):
    label, name, hidden, target = spec
    sh, full = C.model_shape(spec, tok), realsize.shape(name, "full", tok)
    t, f = sh["text"], full["text"]
    config = realsize.make_config(sh, tok)
    model = realsize.meta_model(config)
    assert type(model) is type(realsize.meta_model(realsize.make_config(full, tok)))
    lm = sum(p.numel() for p in decoder_of(model).parameters())
    assert lm == decoder_params(t) == realsize.lm_formula(t) >= target
    assert realsize.lm_formula(dict(t, num_hidden_layers=t["num_hidden_layers"] - 1)) < target  # the fewest layers
    # kept real: head size, query / key-value ratio, vocabulary, RoPE; the MLP ratio within rounding to 64
    assert t["hidden_size"] == hidden and hidden // t["num_attention_heads"] == f["hidden_size"] // f["num_attention_heads"]
    assert t["num_attention_heads"] // t["num_key_value_heads"] == f["num_attention_heads"] // f["num_key_value_heads"]
    assert t["vocab_size"] == f["vocab_size"]
    assert t.get("rope_theta") == f.get("rope_theta") and t.get("rope_parameters") == f.get("rope_parameters")
    assert abs(t["intermediate_size"] / hidden - f["intermediate_size"] / f["hidden_size"]) <= 64 / hidden
    # image tokens per image: the published count, from the config's own fields
    tokens = {"idefics2-8b": lambda: config.perceiver_config.resampler_n_latents,
              "instructblip-vicuna-7b": lambda: config.num_query_tokens,
              "llava-interleave-qwen-7b": lambda: (config.vision_config.image_size // config.vision_config.patch_size) ** 2,
              "qwen2-vl-7b": lambda: (sh["image_size"] // (config.vision_config.patch_size
                                                           * config.vision_config.spatial_merge_size)) ** 2}[name]()
    assert tokens == sh["image_tokens"] == full["image_tokens"]
    assert sum(p.numel() for p in model.parameters()) < 1.5e9  # fits the CPU in nf4 (plus an fp32 lm_head)


def test_sizes_of_the_trend(tok):
    sizes = [realsize.lm_formula(C.model_shape(m, tok)["text"]) for m in C.MODELS if m[1] == "idefics2-8b"]
    assert len(sizes) == 3 and min(sizes) >= 0.25e9 and max(sizes) >= 1e9 and len(set(sizes)) == 3


@pytest.mark.parametrize("name", list(realsize.SHAPES))
def test_random_cache_decode_matches_a_real_prefill(name):
    bb, sh = realsize.build_4bit(name, "tiny", "cpu", torch.float32, seed=0)
    T, d = 12, bb.hidden_size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, T, d, generator=g) * 0.5
    pos = C.context_positions(bb, T)
    with torch.no_grad():
        out = bb.causal_lm(inputs_embeds=x, attention_mask=torch.ones(1, T, dtype=torch.long), position_ids=pos,
                           use_cache=True)
        real = out.get("cache", None) or out.get("past_key_values")
        rnd = C.random_cache(bb, T, seed=1)
        assert len(real.layers) == len(rnd.layers) == bb.num_layers
        for a, b in zip(real.layers, rnd.layers):
            assert a.keys.shape == b.keys.shape and a.values.shape == b.values.shape and a.keys.dtype == b.keys.dtype
        step_real = C.decode_step(bb, real, pos, token=5)
        step_rnd = C.decode_step(bb, rnd, pos, token=5)
        # the cached step equals the last position of a full forward over the T + 1 inputs
        x1 = torch.cat([x, bb.embed_ids(torch.tensor([[5]]))], 1)
        full = bb.causal_lm(inputs_embeds=x1, attention_mask=torch.ones(1, T + 1, dtype=torch.long),
                            position_ids=C.context_positions(bb, T + 1), use_cache=False).logits[:, -1]
    assert torch.allclose(step_real[:, -1], full, atol=1e-4, rtol=1e-4)
    assert step_rnd.shape == step_real.shape == (1, 1, sh["text"]["vocab_size"])
    assert torch.isfinite(step_rnd).all() and not torch.allclose(step_rnd, step_real)  # other cached values
    assert real.get_seq_length() == rnd.get_seq_length() == T + 1
    t = C.decode_latency(bb, T, steps=2, warmup=1)
    assert t["n"] == 2 and t["min"] > 0


def test_linear_fit_against_numpy():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 4096, 9)
    y = 0.3 + 2e-4 * x + rng.normal(0, 0.01, 9)
    f = linear_fit(x, y)
    slope, intercept = np.polyfit(x, y, 1)
    r2 = 1 - np.sum((y - intercept - slope * x) ** 2) / np.sum((y - y.mean()) ** 2)
    assert f["slope"] == pytest.approx(slope) and f["intercept"] == pytest.approx(intercept)
    assert f["r2"] == pytest.approx(r2) and f["n"] == 9
    exact = linear_fit([1, 2, 3], [5, 7, 9])
    assert (exact["slope"], exact["intercept"], exact["r2"]) == pytest.approx((2.0, 3.0, 1.0))
    assert linear_fit([1, 2], [4, 4])["r2"] is None
    with pytest.raises(ValueError):
        linear_fit([3, 3], [1, 2])


def _synthetic_report():
    """Two sizes of one class and one of another: decode rows and training rows with made-up seconds."""
    def dec(ctx_s, hificl=None):
        rows = [{"config": "bare", "context": T, "token_s": {"median": v}} for T, v in ctx_s.items()]
        return rows + ([{"config": "HiFICL", "context": 1024, "ratio_to_bare": hificl}] if hificl else [])

    def tr(v):
        return [{"label": "HiFICL", "step_s": {"median": v}}, {"label": "LoRA", "step_s": {"median": 2 * v}}]

    models = [
        {"model": "a-1b", "shape_name": "a", "lm_parameters": 1.0e9, "decode": dec({512: 1.0, 1024: 1.2, 4096: 2.5}, 1.02),
         "training": tr(3.0)},
        {"model": "a-0.5b", "shape_name": "a", "lm_parameters": 0.5e9, "decode": dec({1024: 0.7, 4096: 1.1}, 1.06),
         "training": tr(1.0)},
        {"model": "b-1b", "shape_name": "b", "lm_parameters": 1.1e9, "decode": dec({1024: 1.5})},
        {"model": "c", "skipped": True},
    ]
    return {"settings": {"adapter_contexts": (1024, 4096)}, "models": models}


def test_fits_against_a_plain_recomputation():
    f = R.fits(_synthetic_report())
    slope, icept = np.polyfit([512, 1024, 4096], [1.0, 1.2, 2.5], 1)
    assert f["context"]["a-1b"]["slope"] == pytest.approx(slope) and f["context"]["a-1b"]["intercept"] == pytest.approx(icept)
    assert set(f["context"]) == {"a-1b", "a-0.5b"}  # b-1b has one context only: no line
    assert f["trend_context"] == 1024
    assert f["size"]["a"]["slope"] == pytest.approx((1.2 - 0.7) / 0.5e9) and set(f["size"]) == {"a"}
    assert f["overhead_size"]["a: HiFICL"]["slope"] == pytest.approx((1.02 - 1.06) / 0.5e9) and len(f["overhead_size"]) == 1
    assert f["training_size"]["a: LoRA"]["slope"] == pytest.approx((6.0 - 2.0) / 0.5e9)
    assert f["training_size"]["a: HiFICL"]["intercept"] == pytest.approx(-1.0)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cpu-realsize")
    s = C.tiny_cpu_settings(decode_contexts=(8, 16, 24), adapter_contexts=(8, 24), decode_steps=1)
    rep = C.run(s, out)
    return s, json.loads((out / "realsize_cpu_tiny.json").read_text()), rep, out


def test_tiny_run(tiny_run, tok):
    s, rep, _, out = tiny_run
    assert (out / "realsize_cpu_tiny.md").read_text().startswith("# Real-size 4-bit benchmark on the CPU (tiny scale)")
    assert (out / "fig_realsize_cpu_tiny.html").is_file()
    assert [m["model"] for m in rep["models"]] == [m[0] for m in C.TINY_MODELS]
    first = rep["models"][0]["model"]
    for m in rep["models"]:
        assert "error" not in m, m.get("traceback")
        sh = realsize.shape(m["shape_name"], "tiny", tok)
        assert m["lm_parameters"] == realsize.lm_formula(sh["text"]) == m["lm_parameters_formula"]
        rows = m["decode"]
        assert not [r for r in rows if "error" in r]
        expected = [("bare", T) for T in s.decode_contexts]
        if m["model"] == first:
            expected += [(c, T) for c in ("HiFICL", "MimIC", "LIVE", "M2IV", "LoRA merged") for T in s.adapter_contexts]
        assert [(r["config"], r["context"]) for r in rows] == expected
        assert all(r["token_s"]["n"] == s.decode_steps * s.decode_rounds and r["ratio_to_bare"] > 0 for r in rows)
        assert m["model"] in rep["fits"]["context"]
        assert ("queries" in m) == ("training" in m) == (m["model"] == first)
    q = rep["models"][0]
    assert [r["label"] for r in q["queries"]][:2] == ["0-shot", "ICL 8-shot"]
    assert [r["label"] for r in q["training"]] == ["HiFICL", "MimIC (teacher 2 shots)", "MimIC (teacher 4 shots)", "LoRA"]
    assert all(r["peak_bytes"] >= r["peak_delta_bytes"] >= 0 for r in q["training"])  # peak RSS on the CPU
    # goals: 8 per-query / training / 4-bit + 5 adapters x 2 contexts for the first model, the 4-bit one for the rest
    assert len(rep["goals"]) == 8 + 10 + 3 and all(g["value"] is not None for g in rep["goals"])
    assert all("tiny scale" in g["name"] for g in rep["goals"])


def test_budget_spent_skips_with_notes_and_fails_goals(tmp_path):
    s = C.tiny_cpu_settings(budget_s=0.0, need_s={"build": 1, "decode": 1, "queries": 1, "training": 1})
    rep = C.run(s, tmp_path)
    assert all(m.get("skipped") for m in rep["models"])
    assert len(rep["skipped"]) == len(s.models) and all("skipped" in n for n in rep["skipped"])
    assert rep["goals"] and not any(g["passed"] for g in rep["goals"]) and all(g["value"] is None for g in rep["goals"])
    assert "skipped (time budget)" in (tmp_path / "realsize_cpu_tiny.md").read_text()


def test_a_section_skipped_when_its_need_exceeds_the_budget(tmp_path):
    s = C.tiny_cpu_settings(models=C.TINY_MODELS[:1], budget_s=1e4,
                            need_s={"build": 0, "decode": 0, "queries": 1e6, "training": 1e6}, decode_contexts=(8, 16),
                            adapter_contexts=(8,), decode_steps=1)
    rep = C.run(s, tmp_path)
    m = rep["models"][0]
    assert m["decode"] and "queries" not in m and "training" not in m
    assert m["notes"] == ["queries skipped (time budget)", "training skipped (time budget)"]
    g = {x["name"]: x for x in rep["goals"]}
    per_query = [x for n, x in g.items() if "per-query" in n or "training step" in n]
    assert len(per_query) == 7 and all(x["value"] is None and not x["passed"] for x in per_query)


def test_readme_block_matches_the_committed_json():
    path = C.DEFAULT_OUT / "realsize_cpu.json"
    report = json.loads(path.read_text()) if path.is_file() else None
    assert R.current(R.README.read_text()) == R.block(report)
    if report is None:
        assert "Not run yet" in R.block(None)
