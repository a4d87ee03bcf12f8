"""benchmarks/gpu.sh (benchmarks.gpu + benchmarks.realsize): the real-size configs against published
parameter counts (meta device, nothing allocated) and the whole run at toy sizes on the CPU -- its JSON's
structure and parameter counts against independent counts.  No timing is asserted."""
from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("bitsandbytes")

from benchmarks import gpu, realsize  # noqa: E402
from mmict_core.backbones.loading import model_class_for  # noqa: E402
from mmict_core.backbones.tiny import tiny_tokenizer  # noqa: E402


def decoder_params(t: dict) -> int:
    """Hand count of a Llama-style decoder: embeddings + per layer (q, k, v, o [+ q/k/v biases for Qwen2],
    gate/up/down, 2 norms) + final norm."""
    h, L, heads, inter, vocab = t["hidden_size"], t["num_hidden_layers"], t["num_attention_heads"], t["intermediate_size"], t["vocab_size"]
    kv_width = t["num_key_value_heads"] * (h // heads)
    per_layer = 2 * h * h + 2 * h * kv_width + 3 * h * inter + 2 * h
    if t["model_type"] == "qwen2":
        per_layer += h + 2 * kv_width
    return vocab * h + L * per_layer + h


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.mark.parametrize("name,lo,hi", [("idefics2-8b", 8.0e9, 8.8e9), ("llava-interleave-qwen-7b", 7.5e9, 8.5e9)])
def test_full_size_configs_match_published_sizes(tok, name, lo, hi):
    sh = realsize.shape(name, "full", tok)
    model = realsize.meta_model(realsize.make_config(sh, tok))  # meta device: no allocation
    assert all(p.is_meta for p in model.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert lo <= total <= hi, f"{name}: {total / 1e9:.2f} B parameters"
    lm = sum(p.numel() for p in model.get_decoder().parameters())
    assert lm == decoder_params(sh["text"])
    head = model.get_output_embeddings().weight
    assert tuple(head.shape) == (sh["text"]["vocab_size"], 4096)
    if name == "idefics2-8b":  # Mistral-7B-v0.1: 7,241,732,096 parameters with lm_head at vocab 32000 (+3 tokens here)
        assert lm + head.numel() == 7_241_732_096 + 2 * 3 * 4096
        assert sh["image_tokens"] == model.config.perceiver_config.resampler_n_latents == 64
    else:  # SigLIP-so400m at 384 px, patch 14, every patch kept: 27 x 27
        assert sh["image_tokens"] == (384 // 14) ** 2 == 729


@pytest.mark.parametrize("name", list(realsize.SHAPES))
def test_full_size_buffers_come_from_a_reduced_eager_build(tok, name):
    sh = realsize.shape(name, "full", tok)
    config = realsize.make_config(sh, tok)
    ref = realsize.reference_buffers(config, tok)
    full = dict(realsize.meta_model(config).named_buffers())
    assert set(full) == set(ref) and all(full[n].shape == ref[n].shape for n in full)
    t = sh["text"]
    theta = t.get("rope_theta") or t["rope_parameters"]["rope_theta"]
    d = t["hidden_size"] // t["num_attention_heads"]  # head size 128 in all four; RoPE: theta^(-2i/d)
    assert d == 128
    expected = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    inv = [b for n, b in ref.items() if n.endswith("rotary_emb.inv_freq")]
    assert len(inv) == 1 and torch.allclose(inv[0].double(), expected, rtol=1e-6)
    # SigLIP at 384 px, patch 14: 729 positions; InstructBLIP's Q-Former: its 512 text positions
    lengths = {"llava-interleave-qwen-7b": [729], "instructblip-vicuna-7b": [512]}.get(name, [])
    pos = [b for n, b in ref.items() if n.endswith("position_ids")]
    assert [b.shape[-1] for b in pos] == lengths
    assert all(torch.equal(b, torch.arange(b.shape[-1])[None]) for b in pos)


@pytest.mark.parametrize("name", list(realsize.SHAPES))
def test_tiny_build_is_the_real_class_in_4bit(tok, name):
    import bitsandbytes as bnb

    bb, sh = realsize.build_4bit(name, "tiny", "cpu", torch.float32, seed=0)
    config = realsize.make_config(sh, tok)
    eager = model_class_for(config)(config)  # independent: the class's own eager build
    assert type(bb.model) is type(eager)
    assert realsize.count_parameters(bb.model) == sum(p.numel() for p in eager.parameters())
    for layer in bb.decoder_layers():
        linears = [m for m in layer.modules() if isinstance(m, torch.nn.Linear)]
        assert linears and all(isinstance(m, bnb.nn.Linear4bit) for m in linears)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in bb.model.get_output_embeddings().modules())
    buffers = dict(eager.named_buffers())
    for n, b in bb.model.named_buffers():  # rotary inv_freq, SigLIP position ids: recomputed, not left empty
        assert torch.equal(b, buffers[n]), n
    assert bb.num_image_tokens == sh["image_tokens"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-bench")
    s = gpu.tiny_settings(contexts=(16, 32), decode_context=16, decode_tokens=2, mimic_teachers=(2, 4), new_tokens=2,
                          query_rounds=1, train_rounds=1)
    goals = gpu.run(s, out)
    return s, json.loads((out / "gpu_tiny.json").read_text()), goals, out


def test_tiny_run_json_structure(tiny_run):
    s, rep, goals, out = tiny_run
    assert (out / "gpu_tiny.md").read_text().startswith("# Real-size 4-bit benchmark (tiny scale)")
    env = rep["environment"]
    assert env["device"].startswith("CPU") and env["torch"] == torch.__version__
    assert env["bitsandbytes"] and env["transformers"]
    assert [m["model"] for m in rep["models"]] == list(s.models)
    for m in rep["models"]:
        assert "error" not in m, m.get("traceback")
        failed = [r for sec in (m["lm"]["prefill"], m["queries"], m["training"]) for r in sec if "error" in r]
        assert not failed, failed
        assert [r["context"] for r in m["lm"]["prefill"]] == [c for c in s.contexts for _ in range(1 + len(gpu.ADAPTERS))]
        assert all(r["tokens_per_s"] > 0 for r in m["lm"]["prefill"])
        assert m["lm"]["decode"]["tokens"] == s.decode_tokens
        labels = [r["label"] for r in m["queries"]]
        assert labels == ["0-shot", "ICL 8-shot", "HiFICL", "MimIC", "LIVE", "M2IV", "LoRA merged", "0-shot (again, last)"]
        q = {r["label"]: r for r in m["queries"]}
        # token counts: 0 demos read the query only; 8 demos add 8 items of the same layout (+ their answers)
        assert all(q[k]["lm_tokens"] == q["0-shot"]["lm_tokens"] for k in ("HiFICL", "MimIC", "LIVE", "M2IV", "LoRA merged"))
        assert q["ICL 8-shot"]["lm_tokens"] > q["0-shot"]["lm_tokens"] + 8 * m["image_tokens"]
        assert [r["label"] for r in m["training"]] == ["HiFICL", "MimIC (teacher 2 shots)", "MimIC (teacher 4 shots)", "LoRA"]
        assert all(r["step_s"]["n"] == s.train_rounds and r["trainable"] > 0 for r in m["training"])
        assert m["peak_bytes"] > 0  # on the CPU: the peak resident set size (VmHWM)
        assert all(r["peak_bytes"] >= r["peak_delta_bytes"] >= 0 for r in m["training"])
    assert len(goals) == len(rep["goals"]) == 8 * len(s.models)
    assert all(g["value"] is not None for g in rep["goals"])  # every goal measured (PASS or FAIL: no timing asserted)


def test_tiny_run_parameter_counts(tiny_run, tok):
    s, rep, _, _ = tiny_run
    for m in rep["models"]:
        sh = realsize.shape(m["model"], "tiny", tok)
        assert m["lm_parameters"] == decoder_params(sh["text"]) == m["lm_parameters_formula"]
        config = realsize.make_config(sh, tok)
        assert m["parameters"] == sum(p.numel() for p in model_class_for(config)(config).parameters())
        # 4-bit LM bytes: fp32 embeddings and norms + half a byte per quantised weight + the quantisation statistics
        h, L, inter = sh["text"]["hidden_size"], sh["text"]["num_hidden_layers"], sh["text"]["intermediate_size"]
        quantised = m["lm_parameters"] - sh["text"]["vocab_size"] * h - (2 * L + 1) * h
        if sh["text"]["model_type"] == "qwen2":
            quantised -= L * 3 * h  # q/k/v biases stay full precision
        full = 4 * (m["lm_parameters"] - quantised)
        assert full + quantised // 2 < m["lm_weight_bytes"] < full + quantised // 2 + quantised // 16 + 7 * L * 4096
        assert m["fp16_lm_bytes"] == 2 * m["lm_parameters"]
        assert m["lm_vs_fp16"] == pytest.approx(m["lm_weight_bytes"] / m["fp16_lm_bytes"])


def test_budget_spent_skips_with_notes_and_fails_goals(tmp_path):
    s = gpu.tiny_settings(budget_s=0.0, need_s={"build": 1, "lm": 1, "queries": 1, "training": 1})
    goals = gpu.run(s, tmp_path)
    rep = json.loads((tmp_path / "gpu_tiny.json").read_text())
    assert all(m.get("skipped") for m in rep["models"])
    assert len(rep["skipped"]) == len(s.models) and all("skipped" in n for n in rep["skipped"])
    assert len(goals) == 8 * len(s.models) and not any(g.passed for g in goals)  # never measured: FAIL
    assert all(g["value"] is None for g in rep["goals"])
    assert "skipped (time budget)" in (tmp_path / "gpu_tiny.md").read_text()
