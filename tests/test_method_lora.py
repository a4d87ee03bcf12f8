"""LoRA through peft's layers: the update against W x + s B A x, injection and restoration, merged
inference, persistence, config checks, parameter counts, quantised backbones and the trainer."""
from __future__ import annotations

import math
import warnings

import pytest
from _helpers import assert_round_trip
import torch

from mmict_core.backbones import TeachingVLM
from mmict_core.data import make_episode
from mmict_core.methods import get_method
from mmict_core.methods.lora import LoRA, LoRAConfig


def episodes(k: int = 0, n: int = 2):
    return [make_episode("shapes-vqa", k, seed=0, index=i, split="train") for i in range(n)]


def loud(m: LoRA) -> LoRA:
    """B is zero at init (no-op); give it values so the update shows."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in m.lora_B.values():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return m.eval()


def modules_snapshot(vlm):
    return {n: mod for n, mod in vlm.model.named_modules()}


def test_linear_output_is_base_plus_scaled_low_rank_update(vlm):
    m = loud(LoRA(vlm, LoRAConfig(r=4, lora_alpha=12.0)))
    base = vlm.attention(1).q_proj
    seen = {}
    batch = m.batch(episodes(), with_answer=True)
    with torch.no_grad(), m.attached():
        wrapper = vlm.attention(1).q_proj
        assert wrapper is not base and wrapper.get_base_layer() is base
        hk = wrapper.register_forward_hook(lambda mod, a, out: seen.update(x=a[0], y=out))
        vlm.forward(batch)
        hk.remove()
    x, y = seen["x"], seen["y"]
    A, B = m.lora_A["1_self_attn_q_proj"], m.lora_B["1_self_attn_q_proj"]
    want = x @ base.weight.T + (12.0 / 4) * (x @ A.T) @ B.T
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    assert (y - x @ base.weight.T).abs().max() > 1e-3


def test_b_zero_at_init_is_a_no_op(vlm):
    m = LoRA(vlm).eval()
    batch = m.batch(episodes(), with_answer=True)
    with torch.no_grad():
        bare = vlm.forward(batch)
        with m.attached():
            same = vlm.forward(batch)
    assert torch.equal(bare, same)


def test_dropout_only_in_training_and_backbone_modes_untouched(vlm):
    m = loud(LoRA(vlm, LoRAConfig(lora_dropout=0.5)))
    batch = m.batch(episodes(), with_answer=True)
    modes = {n: mod.training for n, mod in vlm.model.named_modules()}
    with torch.no_grad():
        m.train()
        with m.attached():
            a, b = vlm.forward(batch), vlm.forward(batch)
        m.eval()
        with m.attached():
            c, d = vlm.forward(batch), vlm.forward(batch)
    assert not torch.equal(a, b) and torch.equal(c, d)
    assert modes == {n: mod.training for n, mod in vlm.model.named_modules()}


def test_attach_detach_is_bit_identical_and_restores_modules(vlm):
    m = loud(LoRA(vlm))
    batch = vlm.assemble_episodes(episodes(2), with_answer=True)
    mods = modules_snapshot(vlm)
    keys = list(vlm.model.state_dict())
    with torch.no_grad():
        before = vlm.forward(batch)
        with m.attached():
            during = vlm.forward(batch)
            # only the LM's decoder layers changed: vision tower and Q-Former are untouched
            now = modules_snapshot(vlm)
            changed = {n for n in mods if now.get(n) is not mods[n]}
            assert changed and all(n.startswith("language_model.") and n.split(".")[-1] in m.config.target_modules
                                   for n in changed)
        after = vlm.forward(batch)
        with pytest.raises(RuntimeError, match="boom"):
            with m.attached():
                raise RuntimeError("boom")
        again = vlm.forward(batch)
    assert (during - before).abs().max() > 1e-2
    assert torch.equal(before, after) and torch.equal(before, again)
    assert all(now is mods[n] for n, now in modules_snapshot(vlm).items()) and len(modules_snapshot(vlm)) == len(mods)
    assert list(vlm.model.state_dict()) == keys


def test_merged_inference_matches_and_restores_weights(vlm):
    m = loud(LoRA(vlm))
    batch = m.batch(episodes(), with_answer=True)
    weights = {n: p.detach().clone() for n, p in vlm.model.named_parameters()}
    with torch.no_grad():
        before = vlm.forward(batch)
        with m.attached():
            unmerged = vlm.forward(batch)
        with m.merged():
            merged = vlm.forward(batch)
            wq = vlm.attention(0).q_proj.get_base_layer().weight
            A, B = m.lora_A["0_self_attn_q_proj"], m.lora_B["0_self_attn_q_proj"]
            torch.testing.assert_close(wq, weights["language_model.model.layers.0.self_attn.q_proj.weight"] + 2.0 * B @ A)
        after = vlm.forward(batch)
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-4)
    assert torch.equal(before, after)
    assert all(torch.equal(p, weights[n]) for n, p in vlm.model.named_parameters())


def test_parameter_count_matches_formula(vlm):
    cfg = vlm.text_config
    L, d, H, Hkv = cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads
    D = d // H
    m = LoRA(vlm)  # r = 16 on q, k, v, o
    per_layer = 16 * ((d + H * D) + 2 * (d + Hkv * D) + (H * D + d))
    assert m.expected_num_parameters() == L * per_layer == 65536
    assert m.num_trainable() == m.expected_num_parameters()
    mlp = LoRA(vlm, LoRAConfig(r=2, target_modules=["gate_proj"]))
    assert mlp.num_trainable() == mlp.expected_num_parameters() == L * 2 * (d + cfg.intermediate_size)
    assert get_method("lora") is LoRA and not LoRA.needs_teacher


@pytest.mark.parametrize("kwargs, field", [
    ({"r": 0}, "r"), ({"r": 2.5}, "r"), ({"lora_alpha": 0.0}, "lora_alpha"), ({"lora_dropout": 1.5}, "lora_dropout"),
    ({"target_modules": []}, "target_modules"), ({"target_modules": ["self_attn.q_proj"]}, "target_modules"),
    ({"target_modules": ["q_proj", "q_proj"]}, "target_modules"),
])
def test_config_out_of_range(kwargs, field):
    with pytest.raises(ValueError, match=field):
        LoRAConfig(**kwargs)


def test_unknown_target_is_refused_with_the_available_names(vlm):
    with pytest.raises(ValueError, match=r"no linear module named \['qkv'\].*q_proj"):
        LoRA(vlm, LoRAConfig(target_modules=["qkv"]))


def test_save_load_round_trip_and_wrong_backbone(vlm, tmp_path):
    m = loud(LoRA(vlm, LoRAConfig(r=4, target_modules=("q_proj", "v_proj"))))
    assert_round_trip(m, tmp_path / "a", m.batch(episodes(), with_answer=True))


def test_global_rng_untouched_by_construction(vlm):
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    LoRA(vlm)
    assert torch.equal(torch.rand(3), want)


def test_loss_is_one_forward_of_cross_entropy(vlm):
    m = loud(LoRA(vlm))
    eps = episodes()
    calls = []
    hk = vlm.language_model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        loss, parts = m.loss(eps)
    finally:
        hk.remove()
    assert len(calls) == 1 and set(parts) == {"ce"}
    with torch.no_grad(), m.attached():
        ce = vlm.loss(m.batch(eps, with_answer=True))
    assert loss.item() == pytest.approx(ce.item(), rel=1e-6)


@pytest.mark.parametrize("quant, cls", [("8bit", "Linear8bitLt"), ("4bit", "Linear4bit")])
def test_quantised_backbone_forward_train_step_and_merge(saved, quant, cls):
    from peft.tuners.lora import bnb as peft_bnb

    qv = TeachingVLM.load(saved, quant=quant)
    m = loud(LoRA(qv))
    eps = episodes()
    batch = m.batch(eps, with_answer=True)
    with torch.no_grad():  # an inference pass first (the 4-bit CPU repack trap)
        before = qv.forward(batch)
        with m.attached():
            assert isinstance(qv.attention(0).q_proj, getattr(peft_bnb, cls))
            during = qv.forward(batch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # peft: merging into 8/4-bit rounds
            with m.merged():
                merged = qv.forward(batch)
        after = qv.forward(batch)
    assert torch.equal(before, after) and torch.isfinite(during).all() and torch.isfinite(merged).all()
    assert (during - before).abs().max() > 1e-2
    m.train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    loss, parts = m.loss(eps)
    loss.backward()
    assert math.isfinite(loss.item())
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in qv.model.parameters())
    # no 4-bit weight was repacked for bitsandbytes' CPU inference kernel, which has no backward
    assert not any(getattr(getattr(mod.weight, "quant_state", None), "packing_format_for_cpu", False)
                   for mod in qv.model.modules() if hasattr(mod, "support_avx512bf16_for_cpu"))
    old = m.lora_A["0_self_attn_q_proj"].detach().clone()
    opt.step()
    assert not torch.equal(old, m.lora_A["0_self_attn_q_proj"])


def test_generate_runs_without_dropout_even_from_training_mode(vlm):
    """A fresh method is in training mode; Compare must not sample dropout masks (outputs would
    change from click to click).  The LoRA branch's dropout modules are seen from inside the call."""
    from mmict_core.data import make_episode

    m = LoRA(vlm, LoRAConfig(r=4, lora_dropout=0.5))
    seen = []
    real = vlm.generate_from

    def spy(batch, **kw):
        seen.extend(d.training for layer in m._layers for d in layer.lora_dropout.values())
        seen.append(m.training)
        return real(batch, **kw)

    m.train()
    vlm.generate_from = spy
    try:
        m.generate([make_episode("binding", 1, seed=0, index=0)])
    finally:
        del vlm.generate_from
    assert seen and not any(seen)  # eval mode inside the call
    assert m.training  # and the caller's mode afterwards
