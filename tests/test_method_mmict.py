"""MMICT, VanillaFT and VanillaICT: M-Hub slices, layout, copies, attach/detach, save/load, quantised loads, trainer."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmict_core.backbones import TeachingVLM
from mmict_core.backbones.base import IGNORE, VLMBackbone
from mmict_core.data import Episode, Example, make_episode
from mmict_core.methods import METHODS, AdapterLoadError, Method
from mmict_core.methods.icl import ICL
from mmict_core.methods.mmict import (MMICT, MMICTConfig, VanillaFT, VanillaFTConfig, VanillaICT, VanillaICTConfig,
                                      hub_positions)
from mmict_core.methods.mmict.method import CPU_REPACK_FLAG, cpu_repacked
from mmict_core.train import TrainConfig, train

PARTS = ("qformer", "query_tokens", "language_projection")


def _img(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def _episode() -> Episode:
    """Two demos whose full texts differ in length (5 vs 11 words), so the Q-Former batch is padded."""
    demos = [Example([_img(1)], "what is this ?", ["dax"]),
             Example([_img(2)], "what colour is the shape in the top left ?", ["red"])]
    return Episode(demos, Example([_img(3)], "what is this ?", ["wug"]))


def _perturb(method: Method, seed: int = 0) -> None:
    """Move the copies away from the backbone's weights (so a test can tell which ones were used)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in method.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def _snapshot(vlm) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in vlm.model.state_dict().items()}


def _logits(method_or_vlm, episodes, method=None):
    with torch.no_grad():
        if isinstance(method_or_vlm, Method):
            b = method_or_vlm.batch(episodes, with_answer=True)
            with method_or_vlm.attached():
                return method_or_vlm.backbone.forward(b)
        return method_or_vlm.forward(method_or_vlm.assemble_episodes(episodes, with_answer=True))


def _plain_qformer(vlm, method, image, text):
    """The method's copied Q-Former called directly, batch of one, no padding.  (1, Q + L, d_q)"""
    ids = torch.tensor([vlm.encode_text(text)])
    vis = vlm.model.vision_model(pixel_values=vlm.pixel_values([image])).last_hidden_state
    q = method.query_tokens
    mask = torch.ones(1, q.shape[1] + ids.shape[1], dtype=torch.long)
    return method.qformer(input_ids=ids, attention_mask=mask, query_embeds=q, encoder_hidden_states=vis,
                          encoder_attention_mask=torch.ones(vis.shape[:2], dtype=torch.long)).last_hidden_state


# -- registry, config, parameter count -----------------------------------------------------------
def test_registered_and_config_ranges():
    assert METHODS["mmict"] is MMICT and METHODS["vanilla-ft"] is VanillaFT and METHODS["vanilla-ict"] is VanillaICT
    assert MMICTConfig().shots == 4 and MMICTConfig().train_shots == 4 and VanillaFTConfig().shots == 0
    for cfg in (MMICTConfig, VanillaFTConfig, VanillaICTConfig):
        for bad in (0.0, -1.0, 11.0, "x"):
            with pytest.raises(ValueError, match="lr_scale"):
                cfg(lr_scale=bad)
        with pytest.raises(ValueError, match="shots"):
            cfg(shots=-1)


def test_parameter_count_and_copies(vlm):
    m = MMICT(vlm)
    direct = sum(p.numel() for n in PARTS for p in ([getattr(vlm.model, n)] if n == "query_tokens"
                                                    else getattr(vlm.model, n).parameters()))
    assert m.expected_num_parameters() == direct == m.num_trainable()
    own = dict(m.named_parameters())
    base = {f"{n}.{k}" if k else n: v for n in PARTS for k, v in
            ([("", getattr(vlm.model, n))] if n == "query_tokens" else getattr(vlm.model, n).named_parameters())}
    assert set(own) == set(base)
    for k in own:  # equal values, separate storage, all trainable
        assert torch.equal(own[k], base[k]) and own[k].data_ptr() != base[k].data_ptr() and own[k].requires_grad


def test_wrong_backbone_refused(vlm):
    class NoHub(VLMBackbone):  # a VLM without a text-reading Q-Former
        model = torch.nn.Linear(2, 2)
        encode_text = decode = encode_images = lambda *a, **k: None

    for cls in (MMICT, VanillaFT, VanillaICT):
        with pytest.raises(TypeError, match="qformer"):
            cls(NoHub())


# -- the M-Hub slices and the MMICT layout -------------------------------------------------------
def test_mmict_features_come_from_the_right_qformer_slices(vlm):
    m = MMICT(vlm)
    _perturb(m)  # the reference below uses the copies; the backbone's Q-Former would not match
    ep = _episode()
    b = m.batch([ep], with_answer=True)
    P = m.language_projection
    Q = vlm.num_query_tokens
    with torch.no_grad():
        for i, demo in enumerate(ep.demos):
            text = f"{demo.prompt} {demo.answer}"
            L = len(vlm.encode_text(text))
            ref = P(_plain_qformer(vlm, m, demo.images[0], text)[0, Q:Q + L])  # (L, d_lm) text-token outputs
            pos = b.positions(0, "mhub_text", i)
            assert len(pos) == L  # exactly the real text tokens, no pads
            torch.testing.assert_close(b.inputs_embeds[0, pos], ref, rtol=1e-5, atol=1e-5)
            wrong = P(_plain_qformer(vlm, m, demo.images[0], text)[0, :Q])
            assert not torch.allclose(b.inputs_embeds[0, pos][:min(L, Q)], wrong[:min(L, Q)], atol=1e-3)
        q = ep.query
        ref_q = P(_plain_qformer(vlm, m, q.images[0], q.prompt)[0, :Q])  # (Q, d_lm) query-token outputs
        torch.testing.assert_close(b.inputs_embeds[0, b.positions(0, "image", 2)], ref_q, rtol=1e-5, atol=1e-5)
        # the prompt and answer are the LM's own embeddings
        pp = b.positions(0, "prompt", 2)
        torch.testing.assert_close(b.inputs_embeds[0, pp], vlm.embed_ids(torch.tensor(vlm.encode_text(q.prompt))),
                                   rtol=0, atol=0)


def test_mmict_layout_separators_and_labels(vlm):
    m = MMICT(vlm)
    ep = _episode()
    b = m.batch([ep], with_answer=True)
    L = [len(vlm.encode_text(f"{d.prompt} {d.answer}")) for d in ep.demos]
    Q = vlm.num_query_tokens
    roles = [(r, it, e - s) for r, it, s, e in b.spans[0]]
    assert roles == [("bos", -1, 1), ("mhub_text", 0, L[0]), ("sep", 0, 1), ("mhub_text", 1, L[1]), ("sep", 1, 1),
                     ("prompt", 2, 4), ("image", 2, Q), ("marker", 2, 1), ("answer", 2, 2)]
    ids = b.token_ids[0].tolist()
    sep_pos = b.positions(0, "sep")
    assert sep_pos == [1 + L[0], 2 + L[0] + L[1]]
    assert all(ids[p] == vlm.sep_token_id for p in sep_pos)
    sep_emb = vlm.model.language_model.get_input_embeddings().weight[vlm.sep_token_id]
    for p in sep_pos:
        assert torch.equal(b.inputs_embeds[0, p], sep_emb)
    trained = (b.labels[0] != IGNORE).nonzero().flatten().tolist()
    assert trained == b.positions(0, "answer", 2)
    assert [ids[p] for p in trained] == vlm.encode_text("wug") + [vlm.eos_token_id]
    # 'all' cannot train demo answers (they live inside the features): same labels as 'query'
    assert torch.equal(m.batch([ep], with_answer=True, loss_on="all").labels, b.labels)
    with pytest.raises(ValueError, match="loss_on"):
        m.batch([ep], with_answer=True, loss_on="everything")


def test_pads_never_reach_the_lm(vlm):
    """Batched with a longer-text episode (Q-Former pads), each episode's input equals its own alone."""
    m = MMICT(vlm)
    ep_long = _episode()
    ep_short = make_episode("binding", 2, seed=0, index=0)
    both = m.batch([ep_short, ep_long], with_answer=True)
    for row, ep in enumerate((ep_short, ep_long)):
        alone = m.batch([ep], with_answer=True)
        n = alone.inputs_embeds.shape[1]
        assert int(both.attention_mask[row].sum()) == n
        torch.testing.assert_close(both.inputs_embeds[row, :n], alone.inputs_embeds[0], rtol=1e-5, atol=1e-6)
        assert both.token_ids[row, :n].tolist() == alone.token_ids[0].tolist()
        for i, d in enumerate(ep.demos):
            assert len(both.positions(row, "mhub_text", i)) == len(vlm.encode_text(f"{d.prompt} {d.answer}"))


def test_hub_positions_map(vlm):
    ep = _episode()
    m = MMICT(vlm)
    Q = vlm.num_query_tokens
    spans = m.batch([ep], with_answer=True).spans[0]
    info = hub_positions(m, ep)
    assert [d["slice"] for d in info] == ["text", "text", "query"]
    for d, demo in zip(info[:2], ep.demos):
        words = f"{demo.prompt} {demo.answer}".split()
        assert d["qformer_positions"] == list(range(Q, Q + len(words))) and d["tokens"] == words
        assert d["lm_span"] == next((s, e) for r, it, s, e in spans if r == "mhub_text" and it == d["item"])
    assert info[2]["qformer_positions"] == list(range(Q)) and info[2]["qformer_text"] == ep.query.prompt
    assert info[2]["lm_span"] == next((s, e) for r, it, s, e in spans if r == "image" and it == 2)
    ict = hub_positions(VanillaICT(vlm), ep)
    assert [d["slice"] for d in ict] == ["query"] * 3 and all(d["qformer_positions"] == list(range(Q)) for d in ict)
    assert len(hub_positions(VanillaFT(vlm), ep)) == 1


def test_mmict_input_shorter_than_vanilla_ict(vlm):
    ep = _episode()
    Q = vlm.num_query_tokens
    n_mmict = MMICT(vlm).batch([ep], with_answer=True).inputs_embeds.shape[1]
    n_ict = VanillaICT(vlm).batch([ep], with_answer=True).inputs_embeds.shape[1]
    words = lambda s: len(vlm.encode_text(s))  # noqa: E731
    q = ep.query
    M = len(vlm.answer_marker_ids)  # the teaching VLM's <answer> marker
    tail = words(q.prompt) + Q + M + words(q.answer) + 1
    assert n_mmict == 1 + sum(words(f"{d.prompt} {d.answer}") + 1 for d in ep.demos) + tail
    assert n_ict == 1 + sum(words(d.prompt) + Q + M + words(d.answer) + 1 for d in ep.demos) + tail
    assert n_mmict < n_ict


# -- identities at initialisation -----------------------------------------------------------------
def test_vanilla_ft_at_init_is_the_base_zero_shot_model(vlm):
    eps = [make_episode("binding", 3, seed=0, index=i) for i in range(2)]
    zero = [Episode([], e.query, e.task) for e in eps]
    ft = VanillaFT(vlm)
    assert torch.equal(_logits(ft, eps), _logits(vlm, zero))
    # MMICT with no demos reads the same layout
    assert torch.equal(_logits(MMICT(vlm), zero), _logits(vlm, zero))


def test_vanilla_ict_at_init_is_base_k_shot_icl(vlm):
    eps = [make_episode("binding", 3, seed=0, index=i) for i in range(2)]
    ict = VanillaICT(vlm)
    assert torch.equal(_logits(ict, eps), _logits(vlm, eps))
    assert torch.equal(_logits(ict, eps), _logits(ICL(vlm), eps))


# -- attach / detach, training, grads, save / load -----------------------------------------------
@pytest.mark.parametrize("cls", [MMICT, VanillaICT, VanillaFT])
def test_attach_detach_and_training_leave_the_backbone_untouched(vlm, cls):
    eps = [_episode(), make_episode("binding", 2, seed=0, index=1)]
    before = _logits(vlm, eps)
    snap = _snapshot(vlm)
    originals = {n: getattr(vlm.model, n) for n in PARTS}
    flags = [p.requires_grad for p in vlm.model.parameters()]
    m = cls(vlm)
    opt = torch.optim.AdamW(m.trainable_parameters(), lr=1e-2)
    loss, parts = m.loss(eps)
    assert math.isfinite(parts["ce"])
    loss.backward()
    for n, p in m.named_parameters():  # grads on every copy ...
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert any(p.grad.abs().sum() > 0 for p in m.parameters())
    assert all(p.grad is None for p in vlm.model.parameters())  # ... and on no backbone parameter
    opt.step()
    with m.attached():
        assert all(getattr(vlm.model, n) is getattr(m, n) for n in PARTS)
        assert not any(p.requires_grad for n, p in vlm.model.named_parameters() if not n.startswith(PARTS))
    assert all(getattr(vlm.model, n) is originals[n] for n in PARTS)
    assert [p.requires_grad for p in vlm.model.parameters()] == flags
    after = _snapshot(vlm)
    assert all(torch.equal(snap[k], after[k]) for k in snap)
    assert torch.equal(_logits(vlm, eps), before)
    assert not torch.equal(_logits(m, eps), _logits(cls(vlm), eps))  # the step changed the copies


def test_save_load_round_trip_and_other_backbone(vlm, tmp_path):
    m = MMICT(vlm, MMICTConfig(shots=2, lr_scale=0.5))
    _perturb(m, seed=3)
    m.save(tmp_path / "a")
    m2 = MMICT.load(tmp_path / "a", vlm)
    assert m2.config == m.config
    sd, sd2 = m.state_dict(), m2.state_dict()
    assert set(sd) == set(sd2) and all(torch.equal(sd[k], sd2[k]) for k in sd)
    eps = [_episode()]
    assert torch.equal(_logits(m, eps), _logits(m2, eps))
    with pytest.raises(AdapterLoadError):
        MMICT.load(tmp_path / "a", TeachingVLM.create(seed=1))
    with pytest.raises(AdapterLoadError):
        VanillaICT.load(tmp_path / "a", vlm)  # an MMICT adapter is not a VanillaICT one


@pytest.mark.parametrize("quant", ["8bit", "4bit"])
def test_quantised_backbones(saved, quant):
    import bitsandbytes as bnb

    qvlm = TeachingVLM.load(saved, quant=quant)
    layer = bnb.nn.Linear8bitLt if quant == "8bit" else bnb.nn.Linear4bit
    assert isinstance(qvlm.attention(0).q_proj, layer)  # the LM is quantised ...
    m = MMICT(qvlm)
    assert all(p.dtype == torch.float32 for p in m.parameters())  # ... the copies are not
    eps = [_episode()]
    with torch.no_grad():
        assert torch.isfinite(_logits(m, eps)).all()
    assert not cpu_repacked(qvlm.model)  # the method's no-grad forward left the 4-bit weights trainable-through
    q_before = {k: v.clone() for k, v in qvlm.model.qformer.state_dict().items()}
    opt = torch.optim.AdamW(m.trainable_parameters(), lr=1e-2)
    loss, _ = m.loss(eps)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    assert all(p.grad is None for p in qvlm.model.parameters())
    grads = [p.grad.clone() for p in m.parameters()]
    opt.step()
    assert all(torch.equal(v, qvlm.model.qformer.state_dict()[k]) for k, v in q_before.items())
    assert isinstance(m.generate(eps, max_new_tokens=1)[0], str)
    if quant == "4bit":
        # same gradients as on a fresh load that never ran a no-grad forward
        m2 = MMICT(TeachingVLM.load(saved, quant=quant))
        m2.loss(eps)[0].backward()
        assert all(torch.equal(g, p.grad) for g, p in zip(grads, m2.parameters()))
        # a 4-bit LM as bitsandbytes builds it (repack for CPU inference allowed on AVX512-BF16 hosts):
        # the method's own no-grad forwards never repack; a plain one does, and then training refuses
        from bitsandbytes.functional import has_avx512bf16

        avx = bool(has_avx512bf16()) and qvlm.device.type == "cpu"
        for mod in qvlm.model.modules():
            if hasattr(mod, CPU_REPACK_FLAG):
                setattr(mod, CPU_REPACK_FLAG, avx)
        with torch.no_grad():
            _logits(m, eps)
        assert not cpu_repacked(qvlm.model)
        with torch.no_grad():
            _logits(qvlm, eps)
        assert cpu_repacked(qvlm.model) == avx
        if avx:
            with pytest.raises(RuntimeError, match="repacked"):
                m.loss(eps)


def test_trainer_steps(vlm):
    for cls in (MMICT, VanillaFT):
        m = cls(vlm, cls.config_class(train_shots=2) if cls is MMICT else None)
        snap = _snapshot(vlm)
        start = {k: v.clone() for k, v in m.state_dict().items()}
        res = train(m, TrainConfig(task="binding", steps=3, batch_size=2), progress=False)
        assert res.steps == 3 and all(math.isfinite(x) for x in res.losses)
        assert any(not torch.equal(v, m.state_dict()[k]) for k, v in start.items())
        after = _snapshot(vlm)
        assert all(torch.equal(snap[k], after[k]) for k in snap)
    # the groups carry the method's lr_scale and keep decay off 1-D parameters
    groups = MMICT(vlm, MMICTConfig(lr_scale=0.25)).param_groups(0.05)
    assert [g["lr_scale"] for g in groups] == [0.25, 0.25]
    assert all(p.ndim >= 2 for p in groups[0]["params"]) and all(p.ndim < 2 for p in groups[1]["params"])
    assert groups[1]["weight_decay"] == 0.0


def test_generate_left_padded(vlm):
    m = MMICT(vlm)
    eps = [_episode(), make_episode("binding", 1, seed=0, index=0)]
    out = m.generate(eps, max_new_tokens=3)
    assert len(out) == 2 and all(isinstance(s, str) for s in out)
