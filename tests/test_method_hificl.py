"""HiFICL: the attention split against plain re-computations, the ICL identity it rests on, the
injection (attach/detach, vision tower untouched, KV cache), quantised loads, save/load, training,
and the virtual-K/V attention capture."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
from _helpers import assert_round_trip
import torch
import torch.nn.functional as F
from transformers import InstructBlipForConditionalGeneration
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from mmict_core.backbones import TeachingVLM
from mmict_core.backbones.teaching import teaching_config
from mmict_core.backbones.tokenizer import BOS, EOS, IMAGE, PAD, build_word_tokenizer
from mmict_core.data import make_episode, vocabulary
from mmict_core.inspect.virtual_kv import VirtualKVAttention, virtual_kv_attention
from mmict_core.methods import METHODS, get_method, swap_attr
from mmict_core.methods.hificl import ATTN_NAME, HiFICL, HiFICLConfig
from mmict_core.methods.hificl.attention import _LAYERS

# The shared backbones leave requires_grad=True on their weights; the methods treat the backbone as
# frozen, so the tests freeze it as a user of the library would (see the report / docs).


def _frozen(vlm):
    vlm.model.requires_grad_(False)
    return vlm


@pytest.fixture(scope="module")
def vlm():
    return _frozen(TeachingVLM.create(seed=0))


@pytest.fixture(scope="module")
def gqa_vlm():
    """The teaching VLM with grouped-query attention in the LM (4 query heads, 2 key/value heads)."""
    tok = build_word_tokenizer(vocabulary())
    ids = {k: tok.token_to_id(t) for k, t in
           dict(pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, image_token_id=IMAGE).items()}
    cfg = teaching_config(tok.get_vocab_size(), **ids)
    cfg.text_config.num_key_value_heads = 2
    torch.manual_seed(0)
    model = InstructBlipForConditionalGeneration(cfg)
    with torch.no_grad():
        model.query_tokens.normal_(0.0, 0.02)
    return _frozen(TeachingVLM(model, tok, image_size=32, name="teaching-gqa"))


@pytest.fixture(scope="module")
def saved_vlm(vlm, tmp_path_factory):
    path = tmp_path_factory.mktemp("tvlm")
    vlm.save(path)
    return path


def _episodes():
    eps = [make_episode("shapes-vqa", 0, index=0), make_episode("shapes-vqa", 0, index=1)]
    assert len(eps[0].query.prompt.split()) != len(eps[1].query.prompt.split())  # the batch is padded
    return eps


def _adapter(vlm, **cfg) -> HiFICL:
    """A HiFICL adapter whose virtual values are non-zero (as after training)."""
    m = HiFICL(vlm, HiFICLConfig(**cfg))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        m.V_B.copy_(torch.randn(m.V_B.shape, generator=g) * 0.3)
        m.K_B.mul_(30.0)  # virtual scores of order 1, so the slot weights differ
    return m


@contextlib.contextmanager
def spy():
    """Record every call of the HiFICL attention function (inputs and output)."""
    real = ALL_ATTENTION_FUNCTIONS[ATTN_NAME]
    calls: list[dict] = []

    def wrapped(module, query, key, value, attention_mask, **kw):
        out = real(module, query, key, value, attention_mask, **kw)
        calls.append(dict(module=module, q=query.detach(), k=key.detach(), v=value.detach(), mask=attention_mask,
                          out=out[0].detach(), scaling=kw.get("scaling")))
        return out

    ALL_ATTENTION_FUNCTIONS[ATTN_NAME] = wrapped
    try:
        yield calls
    finally:
        del ALL_ATTENTION_FUNCTIONS[ATTN_NAME]  # the local override; the registered function remains
    assert ALL_ATTENTION_FUNCTIONS[ATTN_NAME] is real


def _layer_of(vlm, module) -> int:
    return [vlm.attention(i) for i in range(len(vlm.decoder_layers()))].index(module)


def _virtual(m: HiFICL, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """K_learn, V_learn of a layer, formed plainly head by head.  (H, n, d) each"""
    H = m.K_A.shape[1]
    K = torch.stack([m.K_A[layer, h].double() @ m.K_B[layer, h].double() for h in range(H)])
    V = torch.stack([m.V_A[layer, h].double() @ m.V_B[layer, h].double() for h in range(H)])
    return K.detach(), V.detach()


def _rope(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """t (B, T, H, d); cos/sin (B, T, d): the rotate-half RoPE of Llama, written out."""
    half = t.shape[-1] // 2
    rot = torch.cat([-t[..., half:], t[..., :half]], -1)
    return t * cos[:, :, None] + rot * sin[:, :, None]


def _reference_layer(attn, x, cos, sin, am, K, V, z2):
    """The HiFICL layer re-computed with explicit loops over batch, head and position (float64)."""
    B, T, _ = x.shape
    cfg = attn.config
    H, H_kv, d = cfg.num_attention_heads, cfg.num_key_value_heads, attn.head_dim
    q = _rope(attn.q_proj(x).view(B, T, H, d).double(), cos.double(), sin.double())
    k = _rope(attn.k_proj(x).view(B, T, H_kv, d).double(), cos.double(), sin.double())
    v = attn.v_proj(x).view(B, T, H_kv, d).double()
    s = d ** -0.5
    out = torch.zeros(B, T, H, d, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            kh, vh = k[b, :, h // (H // H_kv)], v[b, :, h // (H // H_kv)]
            for t in range(T):
                seen = [j for j in range(T) if j <= t and am[b, j]]
                z2_keys = seen if z2 == "masked" else list(range(T))
                sc = (kh @ q[b, t, h]) * s  # (T,)
                sa = torch.softmax(sc[seen], 0) @ vh[seen]
                Z2 = sc[z2_keys].exp().sum()
                e = ((K[h] @ q[b, t, h]) * s).exp()  # (n,)
                Z1 = e.sum()
                out[b, t, h] = Z2 / (Z1 + Z2) * sa + (e / (Z1 + Z2)) @ V[h]
    return attn.o_proj(out.reshape(B, T, H * d).float())


# -- the math ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["mha", "gqa"])
@pytest.mark.parametrize("z2", ["masked", "faithful"])
def test_layer_output_equals_plain_recomputation(vlm, gqa_vlm, which, z2):
    bb = vlm if which == "mha" else gqa_vlm
    m = _adapter(bb, z2=z2)
    batch = m.batch(_episodes(), with_answer=True)  # right-padded, two lengths
    L = len(bb.decoder_layers())
    io, hooks = {}, []
    for l in range(L):
        attn = bb.attention(l)
        hooks.append(attn.register_forward_pre_hook(
            lambda mod, a, kw, l=l: io.__setitem__((l, "in"), (kw["hidden_states"], *kw["position_embeddings"])),
            with_kwargs=True))
        hooks.append(attn.register_forward_hook(lambda mod, a, out, l=l: io.__setitem__((l, "out"), out[0])))
    try:
        with torch.no_grad(), m.attached():
            bb.forward(batch)
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        for l in range(L):
            x, cos, sin = io[(l, "in")]
            K, V = _virtual(m, l)
            ref = _reference_layer(bb.attention(l), x, cos, sin, batch.attention_mask, K, V, z2)
            torch.testing.assert_close(io[(l, "out")], ref, rtol=1e-4, atol=1e-5)
    assert m.K_A.shape[1] == bb.text_config.num_attention_heads  # one virtual set per *query* head


def test_real_demo_as_virtual_kv_is_exact_icl(vlm):
    """With the virtual K/V set to a demonstration's own keys and values (full rank, K_B = V_B = I)
    and z2='masked', the query-only run equals ordinary attention over [demo; query]."""
    ep = make_episode("shapes-vqa", 1, index=3)
    b = vlm.assemble_episodes([ep], with_answer=True)
    T = b.inputs_embeds.shape[1]
    T_D = min(s for _, item, s, _ in b.spans[0] if item == ep.k)  # BOS + demo tokens come first
    lm = vlm.language_model
    with torch.no_grad():
        full = lm(inputs_embeds=b.inputs_embeds, attention_mask=b.attention_mask, use_cache=True)
    d, L = vlm.attention(0).head_dim, len(vlm.decoder_layers())
    m = HiFICL(vlm, HiFICLConfig(n_virtual=T_D, rank=d, z2="masked"))
    eye = torch.eye(d)
    with torch.no_grad():
        for l in range(L):
            layer = full.past_key_values.layers[l]
            m.K_A[l] = layer.keys[0, :, :T_D]  # (H, T_D, d), RoPE of positions 0..T_D-1 applied
            m.V_A[l] = layer.values[0, :, :T_D]
            m.K_B[l] = eye
            m.V_B[l] = eye
    q_emb = b.inputs_embeds[:, T_D:]
    pos = torch.arange(T_D, T)[None]  # the query keeps the positions it has after the demo
    one = torch.ones(1, T - T_D, dtype=torch.long)
    with torch.no_grad():
        with m.attached():
            got = lm(inputs_embeds=q_emb, attention_mask=one, position_ids=pos, use_cache=False).logits
        alone = lm(inputs_embeds=q_emb, attention_mask=one, position_ids=pos, use_cache=False).logits
    want = full.logits[:, T_D:]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert (alone - want).abs().max() > 1e-2  # the demonstration does matter


def test_zero_init_values_give_alpha_times_attention(vlm):
    """V_B = 0: the injected term is 0 and the output is α·SA_out — not the base model, since α < 1."""
    m = HiFICL(vlm)
    assert torch.count_nonzero(m.V_B) == 0 and torch.count_nonzero(m.V_A @ m.V_B) == 0
    batch = m.batch(_episodes(), with_answer=True)
    with torch.no_grad():
        base = vlm.forward(batch)
        with spy() as calls, m.attached():
            adapted = vlm.forward(batch)
    assert len(calls) == len(vlm.decoder_layers())
    for c in calls:
        q, k, v, mask, s = c["q"], c["k"], c["v"], c["mask"], c["scaling"]
        sa = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=s).transpose(1, 2)  # (B, T, H, d)
        K, _ = _virtual(m, _layer_of(vlm, c["module"]))
        Z2 = ((q.double() @ k.double().transpose(-1, -2)) * s).masked_fill(~mask, -torch.inf).exp().sum(-1)  # (B, H, T)
        Z1 = (torch.einsum("bhtd,hnd->bhtn", q.double(), K) * s).exp().sum(-1)
        alpha = (Z2 / (Z1 + Z2)).float()
        assert alpha.max() < 1
        torch.testing.assert_close(c["out"], alpha.transpose(1, 2)[..., None] * sa, rtol=1e-5, atol=1e-6)
    assert (adapted - base).abs().max() > 1e-4


# -- the injection -----------------------------------------------------------------------------------

def test_attach_detach_bit_identical_and_vision_untouched(vlm):
    m = _adapter(vlm)
    eps = _episodes()
    batch = vlm.assemble_episodes(eps, with_answer=True)
    images = [e.query.images[0] for e in eps]
    prompts = [e.query.prompt for e in eps]
    cfg = vlm.model.config
    impl = (vlm.text_config._attn_implementation, cfg.vision_config._attn_implementation,
            cfg.qformer_config._attn_implementation)
    with torch.no_grad():
        before = vlm.forward(batch)
        img_before = vlm.encode_images(images, prompts)
        with spy() as calls, m.attached():
            inside = vlm.forward(batch)
            img_inside = vlm.encode_images(images, prompts)
            assert vlm.text_config._attn_implementation == ATTN_NAME
            assert (cfg.vision_config._attn_implementation, cfg.qformer_config._attn_implementation) == impl[1:]
            assert len(_LAYERS) == len(vlm.decoder_layers())
        after = vlm.forward(batch)
    assert torch.equal(before, after) and not torch.equal(before, inside)
    assert torch.equal(img_before, img_inside)  # vision tower + Q-Former do not use the HiFICL function
    decoder_attn = {id(vlm.attention(i)) for i in range(len(vlm.decoder_layers()))}
    assert {id(c["module"]) for c in calls} == decoder_attn and len(calls) == len(decoder_attn)
    assert (vlm.text_config._attn_implementation, cfg.vision_config._attn_implementation,
            cfg.qformer_config._attn_implementation) == impl
    assert not _LAYERS
    # detached even when the block raises; a second adapter on the same backbone is refused
    with pytest.raises(KeyError):
        with m.attached():
            raise KeyError("boom")
    assert vlm.text_config._attn_implementation == impl[0] and not _LAYERS
    with m.attached():
        with pytest.raises(RuntimeError, match="already attached"):
            with _adapter(vlm).attached():
                pass
        assert vlm.text_config._attn_implementation == ATTN_NAME and len(_LAYERS) == len(decoder_attn)
    # another method's attention function in place: refused rather than silently bypassed
    h = swap_attr(vlm.text_config, "_attn_implementation", "sdpa")
    vlm.text_config._attn_implementation_internal = "some_other_method"
    try:
        with pytest.raises(RuntimeError, match="not a stock one"):
            with m.attached():
                pass
        assert not _LAYERS and vlm.text_config._attn_implementation == "some_other_method"
    finally:
        h.remove()
    with torch.no_grad():
        assert torch.equal(vlm.forward(batch), before)


def test_eager_backbone_gives_the_same_result(vlm):
    """SA_out comes from the implementation HiFICL replaced: eager (additive float mask) or sdpa (bool mask)."""
    m = _adapter(vlm)
    batch = m.batch(_episodes(), with_answer=True)
    with torch.no_grad():
        with m.attached():
            sdpa = vlm.forward(batch)
        old = vlm.text_config._attn_implementation
        vlm.text_config._attn_implementation = "eager"
        try:
            with m.attached():
                eager = vlm.forward(batch)
            assert vlm.text_config._attn_implementation == "eager"
        finally:
            vlm.text_config._attn_implementation = old
    torch.testing.assert_close(eager, sdpa, rtol=1e-4, atol=1e-4)


def test_unattached_module_is_refused(vlm):
    from mmict_core.methods.hificl.attention import hificl_attention_forward

    q = torch.zeros(1, 4, 2, 32)
    with pytest.raises(RuntimeError, match="no HiFICL adapter"):
        hificl_attention_forward(vlm.attention(0), q, q, q, None)


@pytest.mark.parametrize("z2", ["masked", "faithful"])
def test_cached_generation_matches_no_cache_recomputation(vlm, z2):
    m = _adapter(vlm, z2=z2)
    batch = m.batch(_episodes(), with_answer=False, padding_side="left")
    lm = vlm.language_model
    calls = []
    hook = vlm.decoder().register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad(), m.attached():
            n0 = m.kv_computations
            gen = lm.generate(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, max_new_tokens=2,
                              do_sample=False, num_beams=1, eos_token_id=vlm.eos_token_id, pad_token_id=vlm.pad_token_id,
                              output_logits=True, return_dict_in_generate=True)
            made = m.kv_computations - n0
            n_calls = len(calls)
            # the same two greedy steps without a cache: re-run the whole sequence each time
            emb, mask, toks, logits = batch.inputs_embeds, batch.attention_mask, [], []
            for _ in range(2):
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                last = lm(inputs_embeds=emb, attention_mask=mask, position_ids=pos, use_cache=False).logits[:, -1]
                nxt = last.argmax(-1)
                toks.append(nxt)
                logits.append(last)
                emb = torch.cat([emb, vlm.embed_ids(nxt)[:, None]], 1)
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    finally:
        hook.remove()
    assert n_calls == 2 and made == 1  # K_A@K_B, V_A@V_B formed once for the whole generation
    assert vlm.eos_token_id not in torch.stack(toks, 1).flatten().tolist()
    torch.testing.assert_close(gen.logits[0], logits[0], rtol=1e-4, atol=1e-4)  # the prefill: same forward
    if z2 == "masked":
        assert gen.sequences.tolist() == torch.stack(toks, 1).tolist()
        torch.testing.assert_close(gen.logits[1], logits[1], rtol=1e-4, atol=1e-4)
    else:  # the official unmasked Z2: teacher-forced rows see future keys, cached rows cannot (spec §2(a))
        assert (gen.logits[1] - logits[1]).abs().max() > 1e-5


@pytest.mark.parametrize("which", ["mha", "gqa"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_fused_path_equals_split_path(vlm, gqa_vlm, which, side):
    """z2='masked': the fused single-SDPA path (default) gives the split formulation's logits and
    gradients; 'faithful' and the α/w capture always take the split path."""
    bb = vlm if which == "mha" else gqa_vlm
    m = _adapter(bb)
    batch = m.batch(_episodes(), with_answer=True, padding_side=side)
    res = {}
    for path in ("split", "auto"):
        m.attention_path = path
        m.zero_grad()
        with m.attached():
            logits = bb.forward(batch)
            bb.loss(batch, logits).backward()
        res[path] = (logits.detach(), [p.grad.clone() for p in m.parameters()])
    real = batch.attention_mask.bool()
    torch.testing.assert_close(res["auto"][0][real], res["split"][0][real], rtol=1e-4, atol=1e-4)
    for a, b in zip(res["auto"][1], res["split"][1]):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert m.attention_path == "auto"
    with pytest.raises(ValueError, match="attention_path"):
        m.attention_path = "fast"
    f = HiFICL(bb, HiFICLConfig(z2="faithful"))
    with torch.no_grad(), f.attached():
        with torch.profiler.profile() as prof:
            bb.forward(batch)
    assert any(e.key == "aten::logsumexp" for e in prof.key_averages())  # the split path computed log Z2
    with torch.no_grad(), m.attached():
        with torch.profiler.profile() as prof:
            bb.forward(batch)
    keys = {e.key for e in prof.key_averages()}
    assert "aten::logsumexp" not in keys and "aten::einsum" not in keys  # fused: no separate log Z2 or mixing


def test_unpadded_query_without_mask(vlm):
    """One unpadded query: transformers hands the attention no mask (the stock sdpa's is_causal case).
    Cached generation on the fused path equals a no-cache recomputation and the split path, and
    the eager backbone agrees."""
    m = _adapter(vlm)
    ep = _episodes()[0]
    batch = m.batch([ep], with_answer=False, padding_side="left")
    assert batch.attention_mask.all()
    lm = vlm.language_model
    kw = dict(max_new_tokens=3, do_sample=False, num_beams=1, eos_token_id=vlm.eos_token_id,
              pad_token_id=vlm.pad_token_id, output_logits=True, return_dict_in_generate=True)
    gens = {}
    with torch.no_grad():
        for path in ("auto", "split"):
            m.attention_path = path
            with spy() as calls, m.attached():
                gens[path] = lm.generate(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, **kw)
            assert calls and all(c["mask"] is None for c in calls)  # prefill and decode steps: no mask built
        emb, toks = batch.inputs_embeds, []
        with m.attached():
            for step in range(3):
                last = lm(inputs_embeds=emb, use_cache=False).logits[:, -1]
                torch.testing.assert_close(gens["auto"].logits[step], last, rtol=1e-4, atol=1e-4)
                toks.append(last.argmax(-1))
                emb = torch.cat([emb, vlm.embed_ids(toks[-1])[:, None]], 1)
        old = vlm.text_config._attn_implementation
        vlm.text_config._attn_implementation = "eager"
        try:
            with m.attached():
                eager = lm(inputs_embeds=batch.inputs_embeds, use_cache=False).logits
        finally:
            vlm.text_config._attn_implementation = old
        with m.attached():
            fused = lm(inputs_embeds=batch.inputs_embeds, use_cache=False).logits
    assert gens["auto"].sequences.tolist() == gens["split"].sequences.tolist() == [[t.item() for t in toks]]
    for a, b in zip(gens["auto"].logits, gens["split"].logits):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(eager, fused, rtol=1e-4, atol=1e-4)


def test_virtual_kv_formed_once_per_forward_and_refreshed_on_change(vlm):
    m = _adapter(vlm)
    batch = m.batch(_episodes(), with_answer=True)
    with m.attached():
        n0 = m.kv_computations
        loss = vlm.loss(batch)  # with gradients: once per forward call, not once per layer
        assert m.kv_computations - n0 == 1
        loss.backward()
        vlm.loss(batch).backward()  # a second forward/backward builds a fresh graph
        assert m.kv_computations - n0 == 2
        with torch.no_grad():
            a = vlm.forward(batch)
            b = vlm.forward(batch)
            assert m.kv_computations - n0 == 3 and torch.equal(a, b)
            m.V_B.mul_(2.0)  # an in-place update (optimiser step, load_state_dict) invalidates the cache
            c = vlm.forward(batch)
            assert m.kv_computations - n0 == 4 and not torch.equal(a, c)
    with torch.no_grad(), m.attached():  # a fresh attach starts from a clean cache and agrees
        assert torch.equal(vlm.forward(batch), c)


# -- parameters, config, persistence ----------------------------------------------------------------

def test_parameter_count_shapes_and_init(vlm, gqa_vlm):
    m = HiFICL(vlm)
    L, H, n, r, d = 4, 4, 8, 8, 32
    assert m.expected_num_parameters() == L * H * 2 * (n * r + r * d) == 10240 == m.num_trainable()
    assert [tuple(p.shape) for p in (m.K_A, m.V_A, m.K_B, m.V_B)] == [(L, H, n, r)] * 2 + [(L, H, r, d)] * 2
    assert {id(p) for p in m.trainable_parameters()} == {id(p) for p in (m.K_A, m.K_B, m.V_A, m.V_B)}
    assert abs(float(m.K_A.detach().std()) - 1) < 0.1 and abs(float(m.V_A.detach().std()) - 1) < 0.1
    assert abs(float(m.K_B.detach().std()) - 0.01) < 0.001 and torch.count_nonzero(m.V_B) == 0
    assert torch.equal(HiFICL(vlm).K_A, m.K_A) and not torch.equal(HiFICL(vlm, HiFICLConfig(seed=1)).K_A, m.K_A)
    g = HiFICL(gqa_vlm, HiFICLConfig(rank=16))
    assert g.K_A.shape == (L, H, n, 16) and g.num_trainable() == g.expected_num_parameters() == L * H * 2 * (n * 16 + 16 * d)
    assert get_method("hificl") is HiFICL and "hificl" in METHODS
    assert HiFICLConfig().shots == 0 and HiFICLConfig().train_shots == 0 and not HiFICL.needs_teacher


@pytest.mark.parametrize("bad", [dict(n_virtual=0), dict(n_virtual=8.5), dict(rank=0), dict(rank=5000),
                                 dict(rank=True), dict(z2="none"), dict(shots=-1)])
def test_config_out_of_range(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        HiFICLConfig(**bad)


def test_save_load_round_trip_and_refusal(vlm, tmp_path):
    m = _adapter(vlm, n_virtual=4, rank=6, z2="faithful")
    assert_round_trip(m, tmp_path / "a", m.batch(_episodes(), with_answer=True))


def test_gradients_reach_the_factors_only(vlm):
    eps = _episodes()
    m = HiFICL(vlm)  # at init V_B = 0, so dL/dV_A = dL/dV_learn · V_Bᵀ is exactly 0 (as LoRA's A)
    loss, parts = m.loss(eps)
    loss.backward()
    assert np.isfinite(parts["ce"])
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in (m.K_A, m.K_B, m.V_B))
    assert m.V_A.grad is not None and torch.count_nonzero(m.V_A.grad) == 0
    m = _adapter(vlm)
    m.loss(eps)[0].backward()
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in (m.K_A, m.K_B, m.V_A, m.V_B))
    assert all(p.grad is None for p in vlm.model.parameters())
    # left padding (fully masked pad rows) keeps the gradients finite
    with m.attached():
        lb = m.batch(eps, with_answer=True, padding_side="left")
        m.zero_grad()
        vlm.loss(lb).backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize("quant", ["8bit", "4bit"])
def test_quantised_backbone(saved_vlm, vlm, tmp_path, quant):
    q = _frozen(TeachingVLM.load(saved_vlm, quant=quant))
    kind = "Linear8bitLt" if quant == "8bit" else "Linear4bit"
    assert type(q.attention(0).q_proj).__name__ == kind
    m = _adapter(q)
    eps = _episodes()
    loss, parts = m.loss(eps)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in m.parameters())
    assert all(p.grad is None for p in q.model.parameters())
    texts = m.generate(eps, max_new_tokens=2)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    # an adapter trained on the fp32 backbone loads onto its quantised load (same fingerprint)
    _adapter(vlm).save(tmp_path / "fp32")
    m2 = HiFICL.load(tmp_path / "fp32", q)
    with torch.no_grad(), m2.attached():
        assert torch.isfinite(q.forward(m2.batch(eps, with_answer=True))).all()



# -- the attention capture ---------------------------------------------------------------------------

def test_virtual_kv_attention_capture(vlm):
    m = _adapter(vlm)
    ep = _episodes()[0]
    with spy() as calls:
        res = virtual_kv_attention(m, ep)
    assert isinstance(res, VirtualKVAttention)
    batch = m.batch([ep], with_answer=True)
    L, H, T, n = len(vlm.decoder_layers()), 4, batch.inputs_embeds.shape[1], m.config.n_virtual
    assert res.shape == (L, H, T, n) and res.alpha.shape == res.virtual_mass.shape == (L, H, T)
    np.testing.assert_allclose(res.slot_weights.sum(-1) + res.alpha, 1.0, atol=1e-5)
    np.testing.assert_allclose(res.virtual_mass, 1.0 - res.alpha)
    # the numbers are the formula on the q/k of the same forward
    assert len(calls) == L
    for c in calls:
        l = _layer_of(vlm, c["module"])
        q, k, s = c["q"][0].double(), c["k"][0].double(), c["scaling"]
        K, _ = _virtual(m, l)
        sc = (q @ k.transpose(-1, -2)) * s  # (H, T, T)
        sc = sc.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), -torch.inf)
        Z2 = sc.exp().sum(-1)  # (H, T)
        e = (torch.einsum("htd,hnd->htn", q, K) * s).exp()  # (H, T, n)
        den = Z2 + e.sum(-1)
        np.testing.assert_allclose(res.alpha[l], (Z2 / den).numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(res.slot_weights[l], (e / den[..., None]).numpy(), rtol=1e-4, atol=1e-6)
    # labels: role per position, the text token, '<img i>' for image tokens
    ids = batch.token_ids[0].tolist()
    for role, item, s0, e0 in batch.spans[0]:
        assert list(res.roles[s0:e0]) == [role] * (e0 - s0) and list(res.items[s0:e0]) == [item] * (e0 - s0)
        if role == "image":
            assert list(res.labels[s0:e0]) == [f"<img {j}>" for j in range(e0 - s0)]
    assert res.labels[0] == "<bos>" and res.labels[-1] == "<eos>"
    p = batch.positions(0, "prompt")
    assert " ".join(res.labels[p]) == ep.query.prompt and res.token_ids.tolist() == ids
    assert set(res.roles) == {"bos", "prompt", "image", "answer"} | ({"marker"} if vlm.answer_marker_ids else set())
    with pytest.raises(TypeError):
        virtual_kv_attention(get_method("icl")(vlm), ep)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("masked", [False, True])
def test_decode_attention_equals_the_concatenated_softmax(dtype, masked):
    """The decode step's no-copy attention (grouped query heads, scores joined, no repeat_kv / cat of the
    cache) against the plain softmax over [K_learn ; repeat_kv(key)] in fp32."""
    from transformers.integrations.sdpa_attention import repeat_kv

    from mmict_core.methods.hificl.attention import decode_attention

    g = torch.Generator().manual_seed(0)
    B, H, H_kv, T_k, n, d = 2, 8, 2, 37, 4, 16
    q, k, v = (torch.randn(*s, generator=g) for s in ((B, H, 1, d), (B, H_kv, T_k, d), (B, H_kv, T_k, d)))
    K, V = torch.randn(1, H, n, d, generator=g), torch.randn(1, H, n, d, generator=g)
    mask = None
    if masked:
        mask = torch.ones(B, 1, 1, T_k, dtype=torch.bool)
        mask[0, ..., :5] = False  # left padding of the first row
    got = decode_attention(q.to(dtype), k.to(dtype), v.to(dtype), K, V, mask, d ** -0.5)
    assert got.dtype == dtype and got.shape == (B, H, 1, d)
    kk, vv = torch.cat([K.expand(B, -1, -1, -1), repeat_kv(k, H // H_kv)], 2), torch.cat([V.expand(B, -1, -1, -1), repeat_kv(v, H // H_kv)], 2)
    s = (q @ kk.transpose(-1, -2)) * d ** -0.5  # (B, H, 1, n + T_k)
    if masked:
        s[..., n:] = s[..., n:].masked_fill(~mask, float("-inf"))
    ref = torch.softmax(s, -1) @ vv
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    assert torch.allclose(got.float(), ref, atol=tol, rtol=tol)
