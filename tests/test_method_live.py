"""LIVE: the norm-preserving shift against its formula, injection, the KL + CE loss with a bare
teacher, parameter groups, persistence, config checks, quantised backbones and the trainer."""
from __future__ import annotations

import math

import pytest
from _helpers import assert_round_trip
import torch

from mmict_core.data import make_episode
from mmict_core.methods import get_method
from mmict_core.methods.distill import capture_outputs
from mmict_core.methods.live import LIVE, LIVEConfig
from mmict_core.train import _param_groups


def episodes(k: int, n: int = 2):
    return [make_episode("shapes-vqa", k, seed=0, index=i, split="train") for i in range(n)]


def loud(m: LIVE) -> LIVE:
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        m.vectors.copy_(torch.randn(m.vectors.shape, generator=g))
        m.alpha.copy_(torch.linspace(0.5, 2.0, m.num_layers))
    return m


def test_mlp_output_is_shifted_norm_preservingly(vlm):
    m = loud(LIVE(vlm))
    batch = m.batch(episodes(0), with_answer=True)
    mlps = [vlm.mlp(i) for i in range(m.num_layers)]
    with torch.no_grad(), capture_outputs(mlps) as raw:  # registered first: sees the MLP's own output
        with m.attached(), capture_outputs(mlps) as shifted:  # registered after LIVE's hooks
            vlm.forward(batch)
    for i in range(m.num_layers):
        h, out = raw[i], shifted[i]
        a, v = m.alpha[i].item(), m.vectors[i]
        want = (h + a * v) * h.norm(dim=-1, keepdim=True) / (h + a * v).norm(dim=-1, keepdim=True)
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out.norm(dim=-1), h.norm(dim=-1), rtol=1e-5, atol=1e-6)
        assert (out - h).abs().max() > 1e-3


def test_zero_alpha_leaves_the_model_unchanged(vlm):
    m = loud(LIVE(vlm))
    with torch.no_grad():
        m.alpha.zero_()
    batch = m.batch(episodes(0), with_answer=True)
    with torch.no_grad():
        bare = vlm.forward(batch)
        with m.attached():
            shifted = vlm.forward(batch)
    torch.testing.assert_close(shifted, bare, rtol=1e-5, atol=1e-5)



def test_parameter_count_and_init(vlm):
    m = LIVE(vlm)
    cfg = vlm.text_config
    L, d = cfg.num_hidden_layers, cfg.hidden_size
    assert m.expected_num_parameters() == L * d + L == 4 * 128 + 4
    assert m.num_trainable() == m.expected_num_parameters()
    assert torch.equal(m.alpha, torch.full((L,), 0.1))
    assert 0.005 < m.vectors.std().item() < 0.015
    assert get_method("live") is LIVE and LIVE.needs_teacher


def test_alpha_has_its_own_learning_rate(vlm):
    m = LIVE(vlm, LIVEConfig(alpha_lr_scale=2.0))
    groups = _param_groups(m, 1e-3)
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert by_param[id(m.alpha)]["lr_scale"] == 2.0 and by_param[id(m.alpha)]["weight_decay"] == 0.0
    assert by_param[id(m.vectors)].get("lr_scale", 1.0) == 1.0 and by_param[id(m.vectors)]["weight_decay"] == 1e-3
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))


@pytest.mark.parametrize("kwargs, field", [
    ({"kl_weight": -1.0}, "kl_weight"), ({"ce_weight": 1e9}, "ce_weight"), ({"train_shots": 0}, "train_shots"),
    ({"alpha_lr_scale": -1.0}, "alpha_lr_scale"), ({"vector_init_std": 2.0}, "vector_init_std"),
    ({"alpha_init": "big"}, "alpha_init"), ({"kl_weight": 0.0, "ce_weight": 0.0}, "kl_weight"),
])
def test_config_out_of_range(kwargs, field):
    with pytest.raises(ValueError, match=field):
        LIVEConfig(**kwargs)


def test_save_load_round_trip_and_wrong_backbone(vlm, tmp_path):
    m = loud(LIVE(vlm, LIVEConfig(alpha_lr_scale=3.0)))
    assert_round_trip(m, tmp_path / "a", m.batch(episodes(0), with_answer=True))


def test_loss_is_kl_from_a_bare_teacher_plus_ce(vlm):
    m = loud(LIVE(vlm))
    eps = episodes(3)
    teacher = vlm.assemble_episodes(eps, with_answer=True, loss_on="query")
    student = m.batch(eps, with_answer=True)
    T = teacher.inputs_embeds.shape[1]
    calls, logits_seen = [], []
    hooks = [vlm.language_model.register_forward_pre_hook(lambda *a: calls.append(1)),
             vlm.language_model.register_forward_hook(lambda mod, a, out: logits_seen.append(out.logits.detach().clone()))]
    try:
        loss, parts = m.loss(eps)
    finally:
        for hk in hooks:
            hk.remove()
    assert len(calls) == 2  # teacher forward + student forward
    assert set(parts) == {"ce", "kl"} and all(math.isfinite(v) for v in parts.values()) and parts["kl"] > 0
    t_logits = next(x for x in logits_seen if x.shape[1] == T)
    with torch.no_grad():
        bare = vlm.forward(teacher)
        with m.attached():
            s_logits = vlm.forward(student)
            attached_teacher = vlm.forward(teacher)
    assert torch.equal(t_logits, bare)  # the teacher ran with the adapter detached
    assert (attached_teacher - bare).abs().max() > 1e-2
    # KL(teacher || student) at the logits predicting each query answer token, by hand
    kls = []
    for b, ep in enumerate(eps):
        tp = [p - 1 for p in teacher.positions(b, "answer", ep.k)]
        sp = [p - 1 for p in student.positions(b, "answer", 0)]
        pt, ps = bare[b, tp].softmax(-1), s_logits[b, sp].softmax(-1)
        kls.append((pt * ((pt + 1e-6).log() - (ps + 1e-6).log())).sum(-1))
    kl = torch.cat(kls).mean().item()
    ce = vlm.loss(student, s_logits).item()
    assert parts["kl"] == pytest.approx(kl, rel=1e-4)
    assert parts["ce"] == pytest.approx(ce, rel=1e-5)
    assert loss.item() == pytest.approx(kl + 0.5 * ce, rel=1e-4)
    with m.attached(), pytest.raises(RuntimeError, match="outside"):
        m.loss(eps)

