"""MimIC: the shifted attention against a plain re-computation, injection, teacher/student loss,
persistence, config checks, quantised backbones and the shared trainer."""
from __future__ import annotations

import math

import pytest
from _helpers import assert_round_trip
import torch

from mmict_core.data import make_episode
from mmict_core.methods import get_method
from mmict_core.methods.distill import capture_outputs
from mmict_core.methods.mimic import MimIC, MimICConfig
from mmict_core.methods.mimic import attention as mimic_attention


def episodes(k: int, n: int = 2):
    # indices 0 and 1 have prompts of different lengths: the query-only batch is padded
    return [make_episode("shapes-vqa", k, seed=0, index=i, split="train") for i in range(n)]


def loud(m: MimIC, gate_b: float = 1.0) -> MimIC:
    """Parameters large enough that the shift clearly changes the output."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        m.shift.copy_(torch.randn(m.shift.shape, generator=g))
        m.gate_w.copy_(torch.randn(m.gate_w.shape, generator=g) * 0.3)
        m.gate_b.fill_(gate_b)
    return m


def rope(x, cos, sin):
    """Llama rotary embedding: x (B, H, T, D), cos/sin (B, T, D)."""
    h = x.shape[-1] // 2
    rot = torch.cat([-x[..., h:], x[..., :h]], -1)
    return x * cos[:, None] + rot * sin[:, None]


def by_hand(attn, h, cos, sin, pad_mask, w, b, v, masked: bool):
    """SA(q, K, V) + sigmoid(f - log Z2) v, everything recomputed from the layer's input."""
    B, T, _ = h.shape
    H, D = w.shape
    q = rope(attn.q_proj(h).view(B, T, H, D).transpose(1, 2), cos, sin)
    k = rope(attn.k_proj(h).view(B, T, H, D).transpose(1, 2), cos, sin)
    val = attn.v_proj(h).view(B, T, H, D).transpose(1, 2)
    s = q @ k.transpose(-1, -2) / math.sqrt(D)  # (B, H, T, T)
    visible = torch.ones(T, T).tril().bool()[None, None] & pad_mask.bool()[:, None, None, :]
    sa = s.masked_fill(~visible, float("-inf")).softmax(-1) @ val  # (B, H, T, D)
    log_z2 = (s.masked_fill(~visible, float("-inf")) if masked else s).logsumexp(-1)  # (B, H, T)
    f = (q * w[None, :, None]).sum(-1) + b[None, :, None]
    mu = torch.sigmoid(f - log_z2)  # == exp(f - logaddexp(f, log Z2))
    return (sa + mu[..., None] * v[None, :, None]).transpose(1, 2).reshape(B, T, H * D)


@pytest.mark.parametrize("z2", ["masked", "faithful"])
def test_attention_output_is_sa_plus_gated_shift(vlm, z2):
    m = loud(MimIC(vlm, MimICConfig(z2=z2)))
    batch = m.batch(episodes(0), with_answer=True)
    assert batch.attention_mask.min() == 0  # right padding present: the two z2 modes differ
    L = m.num_layers
    ins, outs, hooks = {}, {}, []
    for i in range(L):
        a = vlm.attention(i)
        hooks.append(a.register_forward_pre_hook(
            lambda mod, args, kw, i=i: ins.__setitem__(i, (kw.get("hidden_states", args[0] if args else None),
                                                           kw["position_embeddings"])), with_kwargs=True))
        hooks.append(a.o_proj.register_forward_pre_hook(lambda mod, args, i=i: outs.__setitem__(i, args[0])))
    try:
        with torch.no_grad(), m.attached():
            vlm.forward(batch)
    finally:
        for hk in hooks:
            hk.remove()
    with torch.no_grad():
        for i in range(L):
            h, (cos, sin) = ins[i]
            args = (vlm.attention(i), h, cos, sin, batch.attention_mask, m.gate_w[i], m.gate_b[i], m.shift[i])
            want, other = by_hand(*args, masked=z2 == "masked"), by_hand(*args, masked=z2 != "masked")
            torch.testing.assert_close(outs[i], want, rtol=1e-4, atol=1e-4)
            assert (outs[i] - other).abs().max() > 1e-2  # the other Z2 mode is really something else


def test_closed_gate_leaves_the_model_unchanged(vlm):
    m = loud(MimIC(vlm), gate_b=-1e4)  # mu ~ 0: SA + 0 * v
    batch = m.batch(episodes(0), with_answer=True)
    with torch.no_grad():
        bare = vlm.forward(batch)
        with m.attached():
            shifted = vlm.forward(batch)
    torch.testing.assert_close(shifted, bare, rtol=1e-5, atol=1e-5)


def test_attach_detach_is_bit_identical(vlm):
    m = loud(MimIC(vlm))
    batch = vlm.assemble_episodes(episodes(2), with_answer=True)
    impl = vlm.text_config._attn_implementation
    with torch.no_grad():
        before = vlm.forward(batch)
        with m.attached():
            assert vlm.text_config._attn_implementation == mimic_attention.ATTN_NAME
            during = vlm.forward(batch)
        after = vlm.forward(batch)
        with pytest.raises(RuntimeError, match="boom"):
            with m.attached():
                raise RuntimeError("boom")
        again = vlm.forward(batch)
    assert (during - before).abs().max() > 1e-2
    assert torch.equal(before, after) and torch.equal(before, again)
    assert vlm.text_config._attn_implementation == impl
    assert len(mimic_attention.ACTIVE) == 0
    with m.attached(), pytest.raises(RuntimeError, match="already replaced"):  # would bypass the first silently
        with MimIC(vlm).attached():
            pass
    assert vlm.text_config._attn_implementation == impl and len(mimic_attention.ACTIVE) == 0


@pytest.mark.parametrize("z2, consistent", [("masked", True), ("faithful", False)])
def test_cached_decoding_matches_a_full_forward_only_when_masked(vlm, z2, consistent):
    """The last position's logits from a KV-cached step vs a full forward of the same sequence."""
    m = loud(MimIC(vlm, MimICConfig(z2=z2)))
    batch = m.batch(episodes(0, n=1), with_answer=True)
    x, mask = batch.inputs_embeds, batch.attention_mask
    lm = vlm.language_model
    with torch.no_grad(), m.attached():
        full = lm(inputs_embeds=x, attention_mask=mask, use_cache=False).logits[:, -1]
        past = lm(inputs_embeds=x[:, :-1], attention_mask=mask[:, :-1], use_cache=True).past_key_values
        step = lm(inputs_embeds=x[:, -1:], attention_mask=mask, past_key_values=past, use_cache=True).logits[:, -1]
    if consistent:
        torch.testing.assert_close(step, full, rtol=1e-5, atol=1e-5)
    else:  # the official unmasked Z2 sums over future keys in training but not while decoding
        assert (step - full).abs().max() > 1e-3



def test_parameter_count_matches_formula(vlm):
    m = MimIC(vlm)
    cfg = vlm.text_config
    L, H = cfg.num_hidden_layers, cfg.num_attention_heads
    d_h = cfg.hidden_size // H
    assert m.expected_num_parameters() == L * H * (2 * d_h + 1) == 4 * 4 * 65
    assert m.num_trainable() == m.expected_num_parameters()
    assert get_method("mimic") is MimIC and MimIC.needs_teacher


def test_initialisation_follows_the_paper(vlm):
    m = MimIC(vlm, MimICConfig(seed=3))
    assert torch.equal(m.gate_b, torch.zeros_like(m.gate_b))
    assert 0.5e-3 < m.shift.std().item() < 1.5e-3
    assert 0.01 < m.gate_w.std().item() < 0.03
    assert torch.equal(MimIC(vlm, MimICConfig(seed=3)).shift, m.shift)
    assert not torch.equal(MimIC(vlm, MimICConfig(seed=4)).shift, m.shift)


@pytest.mark.parametrize("kwargs, field", [
    ({"z2": "none"}, "z2"), ({"align_weight": -1.0}, "align_weight"), ({"ce_weight": 1e9}, "ce_weight"),
    ({"train_shots": 0}, "train_shots"), ({"shift_init_std": -0.1}, "shift_init_std"),
    ({"align_weight": 0.0, "ce_weight": 0.0}, "align_weight"),
])
def test_config_out_of_range(kwargs, field):
    with pytest.raises(ValueError, match=field):
        MimICConfig(**kwargs)


def test_save_load_round_trip_and_wrong_backbone(vlm, tmp_path):
    m = loud(MimIC(vlm, MimICConfig(z2="faithful")))
    assert_round_trip(m, tmp_path / "a", m.batch(episodes(0), with_answer=True))


def test_loss_runs_the_teacher_on_the_bare_backbone(vlm):
    m = loud(MimIC(vlm))
    eps = episodes(3)
    teacher = vlm.assemble_episodes(eps, with_answer=True, loss_on="query")
    T = teacher.inputs_embeds.shape[1]
    mlps = [vlm.mlp(i) for i in range(m.num_layers)]
    calls, seen = [], []
    hooks = [vlm.language_model.register_forward_pre_hook(lambda *a: calls.append(1))]
    hooks += [mod.register_forward_hook(lambda mod, a, out, i=i: seen.append((i, out.detach().clone())))
              for i, mod in enumerate(mlps)]
    try:
        loss, parts = m.loss(eps)
    finally:
        for hk in hooks:
            hk.remove()
    assert len(calls) == 2  # teacher forward + student forward
    assert set(parts) == {"ce", "align"} and all(math.isfinite(v) for v in parts.values())
    expected = m.config.align_weight * parts["align"] + m.config.ce_weight * parts["ce"]
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    teacher_out = {i: o for i, o in seen if o.shape[1] == T}
    assert len(teacher_out) == m.num_layers
    with torch.no_grad():
        with capture_outputs(mlps) as out:
            vlm.forward(teacher)
        bare = [o.clone() for o in out]
        with m.attached(), capture_outputs(mlps) as out:
            vlm.forward(teacher)
        shifted = [o.clone() for o in out]
    for i in range(m.num_layers):
        assert torch.equal(teacher_out[i], bare[i])
    assert (shifted[-1] - bare[-1]).abs().max() > 1e-3  # an attached teacher would have shown up
    with m.attached(), pytest.raises(RuntimeError, match="outside"):
        m.loss(eps)


def test_alignment_term_by_hand(vlm):
    """align == mean over layers of the MSE between query-token MLP outputs (teacher k-shot, student 0-shot)."""
    m = loud(MimIC(vlm, MimICConfig(ce_weight=0.0)))
    eps = episodes(2)
    mlps = [vlm.mlp(i) for i in range(m.num_layers)]
    teacher = vlm.assemble_episodes(eps, with_answer=True)
    student = m.batch(eps, with_answer=True)
    with torch.no_grad():
        with capture_outputs(mlps) as t:
            vlm.forward(teacher)
        with m.attached(), capture_outputs(mlps) as s:
            vlm.forward(student)
        per_layer = []
        for lt, ls in zip(t, s):
            diffs = []
            for b, ep in enumerate(eps):
                tq = [p for role in ("prompt", "image", "answer") for p in teacher.positions(b, role, ep.k)]
                sq = [p for role in ("prompt", "image", "answer") for p in student.positions(b, role, 0)]
                diffs.append(lt[b, sorted(tq)] - ls[b, sorted(sq)])
            d = torch.cat(diffs)
            per_layer.append((d ** 2).mean())
        want = torch.stack(per_layer).mean().item()
        loss, parts = m.loss(eps)
    assert parts["align"] == pytest.approx(want, rel=1e-4)
    assert loss.item() == pytest.approx(want, rel=1e-4)




def test_attention_capture_protocol_gives_the_shift_gate(vlm):
    """capture() records (1 - mu, mu) per layer; at layer 0 (same input with or without the adapter)
    the o_proj input moves by exactly mu * v per head — an independent read of mu."""
    from mmict_core.inspect.virtual_kv import virtual_kv_attention
    from mmict_core.methods import captures_attention

    m = loud(MimIC(vlm))
    assert captures_attention(m)
    ep = episodes(0, 1)[0]
    batch = m.batch([ep], with_answer=True)
    o_proj = vlm.attention(0).o_proj
    seen = []
    hook = o_proj.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    try:
        with torch.no_grad():
            vlm.forward(batch)
            with m.attached(), m.capture() as cap:
                vlm.forward(batch)
    finally:
        hook.remove()
    alpha, w = cap[0]  # (1, H, T), (1, H, T, 1)
    assert len(cap) == vlm.num_layers and w.shape[-1] == 1
    assert torch.allclose(alpha + w.sum(-1), torch.ones_like(alpha))
    B, T, _ = seen[0].shape
    delta = (seen[1] - seen[0]).view(B, T, vlm.num_heads, vlm.head_dim)  # (B, T, H, D)
    expect = w[..., 0].transpose(1, 2)[..., None] * m.shift[0][None, None]  # mu (B, T, H, 1) * v (H, D)
    assert torch.allclose(delta, expect, atol=1e-5)
    res = virtual_kv_attention(m, ep)  # the Attention view reads it like HiFICL's
    assert res.shape == (vlm.num_layers, vlm.num_heads, batch.inputs_embeds.shape[1], 1)
    assert m._capture is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("T", [1, 5])
def test_shift_with_grouped_key_heads_equals_the_repeated_cache_formula(dtype, T):
    """mimic_shift on the un-repeated (B, H_kv, S, D) keys -- the decode step in the cache's dtype --
    against the formula in fp32 over repeat_kv(key): SA + sigmoid(w.q + b - log Z2) * v."""
    from transformers.integrations.sdpa_attention import repeat_kv

    from mmict_core.methods.mimic.attention import mimic_shift

    g = torch.Generator().manual_seed(1)
    B, H, H_kv, S, D = 2, 8, 2, 29, 16
    q, k = torch.randn(B, H, T, D, generator=g), torch.randn(B, H_kv, S, D, generator=g)
    sa = torch.randn(B, T, H, D, generator=g)
    w, b, v = torch.randn(H, D, generator=g) * 0.1, torch.randn(H, generator=g), torch.randn(H, D, generator=g)
    mask = torch.ones(B, 1, T, S, dtype=torch.bool).tril(diagonal=S - T)
    mask[0, ..., :4] = False  # left padding of the first row
    got = mimic_shift(q.to(dtype), k.to(dtype), sa.to(dtype), mask, D ** -0.5, w, b, v, "masked")
    assert got.dtype == dtype and got.shape == (B, T, H, D)
    s = (q @ repeat_kv(k, H // H_kv).transpose(-1, -2)) * D ** -0.5  # (B, H, T, S)
    log_z2 = s.masked_fill(~mask, float("-inf")).logsumexp(-1)
    mu = torch.sigmoid((q * w[None, :, None]).sum(-1) + b[None, :, None] - log_z2)  # (B, H, T)
    ref = sa + mu.transpose(1, 2)[..., None] * v
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(got.float(), ref, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("pad", [False, True])
def test_decode_step_equals_sdpa_plus_shift_over_the_repeated_cache(dtype, pad):
    """mimic_decode_step (one q.k pass: softmax and log Z2 from the same scores) against the plain fp32
    formula over repeat_kv(key/value): softmax(q.k / sqrt(D) masked) @ V + sigmoid(w.q + b - log Z2) * v."""
    from transformers.integrations.sdpa_attention import repeat_kv

    from mmict_core.methods.mimic.attention import mimic_decode_step

    g = torch.Generator().manual_seed(2)
    B, H, H_kv, S, D = 2, 8, 2, 37, 16
    q = torch.randn(B, H, 1, D, generator=g)
    k, val = torch.randn(B, H_kv, S, D, generator=g), torch.randn(B, H_kv, S, D, generator=g)
    w, b, v = torch.randn(H, D, generator=g) * 0.1, torch.randn(H, generator=g), torch.randn(H, D, generator=g)
    mask = torch.ones(B, 1, 1, S, dtype=torch.bool)
    if pad:
        mask[1, ..., :6] = False  # left padding of the second row
    cap: dict = {}
    got = mimic_decode_step(q.to(dtype), k.to(dtype), val.to(dtype), mask, D ** -0.5, w, b, v, cap, 3)
    assert got.dtype == dtype and got.shape == (B, 1, H, D)
    s = (q @ repeat_kv(k, H // H_kv).transpose(-1, -2) * D ** -0.5).masked_fill(~mask, float("-inf"))  # (B, H, 1, S)
    sa = (s.softmax(-1) @ repeat_kv(val, H // H_kv)).transpose(1, 2)  # (B, 1, H, D)
    mu = torch.sigmoid((q * w[None, :, None]).sum(-1) + b[None, :, None] - s.logsumexp(-1))  # (B, H, 1)
    ref = sa + mu.transpose(1, 2)[..., None] * v
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(got.float(), ref, atol=tol, rtol=tol)
    torch.testing.assert_close(cap[3][1][..., 0], mu, atol=tol, rtol=tol)  # the captured gate is the same mu


def test_cached_decoding_through_the_decode_step_matches_full_recompute(vlm):
    """A cached decode step (it takes mimic_decode_step) gives the same next-token logits as re-running the
    whole left-padded sequence without a cache (every position through SDPA + mimic_shift)."""
    m = loud(MimIC(vlm, MimICConfig()))
    bb = vlm
    lm = bb.language_model
    with torch.no_grad(), m.attached():
        batch = bb.assemble_episodes(episodes(0), with_answer=False, padding_side="left")
        assert batch.attention_mask.min() == 0  # left padding present
        mask = batch.attention_mask
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = lm(inputs_embeds=batch.inputs_embeds, attention_mask=mask, position_ids=pos, use_cache=True)
        emb = lm.get_input_embeddings()(out.logits[:, -1].argmax(-1))[:, None]  # (B, 1, d): the greedy token
        mask2 = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        pos2 = (mask2.cumsum(-1) - 1).clamp(min=0)
        step = lm(inputs_embeds=emb, attention_mask=mask2, position_ids=pos2[:, -1:],
                  past_key_values=out.past_key_values, use_cache=True)
        full = lm(inputs_embeds=torch.cat([batch.inputs_embeds, emb], 1), attention_mask=mask2, position_ids=pos2,
                  use_cache=False)
    torch.testing.assert_close(step.logits[:, -1], full.logits[:, -1], atol=1e-4, rtol=1e-4)
    with torch.no_grad():  # and the shift is on in both: detached, the last logits differ
        plain = lm(inputs_embeds=torch.cat([batch.inputs_embeds, emb], 1), attention_mask=mask2, position_ids=pos2,
                   use_cache=False)
    assert (plain.logits[:, -1] - full.logits[:, -1]).abs().max() > 1e-2
