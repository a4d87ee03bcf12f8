"""M2IV-style vectors: the injection math, identities, losses vs plain re-computations, the
many-shot teacher, persistence, quantised backbones and the trainer."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmict_core.backbones import TeachingVLM
from mmict_core.data import Episode, make_episode
from mmict_core.methods import AdapterLoadError, get_method
from mmict_core.methods.distill import capture_outputs, gather_rows, query_positions
from mmict_core.methods.m2iv import (M2IV, M2IVConfig, generation_mask, many_shot_episode, split_demo_sets,
                                     synergy_loss)
from mmict_core.train import TrainConfig, train


# The shared backbones leave requires_grad=True on their weights; the method treats the backbone as
# frozen (it never touches the flags), so the tests freeze it the way a user would.
@pytest.fixture(scope="module")
def bb():
    vlm = TeachingVLM.create(seed=0)
    vlm.model.requires_grad_(False)
    return vlm


def episodes(k=2, n=2, task="binding"):
    return [make_episode(task, k, seed=0, index=i, split="train", pool_size=max(k, 1)) for i in range(n)]


def randomise(m: M2IV, seed=1):
    """Non-trivial vectors and strengths, so every branch visibly changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in list(m.parameters()) + list(m.buffers()):
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return m


def logits_of(bb, eps, method=None):
    batch = bb.assemble_episodes([Episode([], e.query) for e in eps], with_answer=True)
    with torch.no_grad():
        if method is None:
            return bb.forward(batch)
        with method.attached():
            return bb.forward(batch)


def capture_around(bb, method, modules, pre=False):
    """Outputs (or inputs, with pre=True) of ``modules`` seen before and after the method's hooks."""
    def recorder(store):
        def hook(mod, *a):
            i = modules.index(mod)
            store[i] = (a[0][0] if pre else (a[1][0] if isinstance(a[1], tuple) else a[1])).detach().clone()
        return hook

    before, after = [None] * len(modules), [None] * len(modules)
    reg = (lambda m, f: m.register_forward_pre_hook(f)) if pre else (lambda m, f: m.register_forward_hook(f))
    h1 = [reg(m, recorder(before)) for m in modules]  # runs before the method's hooks
    with method.attached():
        h2 = [reg(m, recorder(after)) for m in modules]  # runs after them
        logits_of(bb, episodes(0))
    for h in h1 + h2:
        h.remove()
    return before, after


# -- the injection math ------------------------------------------------------------------------
def test_hooked_outputs_are_base_plus_strength_times_vector(bb):
    m = randomise(M2IV(bb, M2IVConfig()))
    L = len(bb.decoder_layers())
    for kind, mods in (("mha", [bb.attention(l) for l in range(L)]), ("mlp", [bb.mlp(l) for l in range(L)])):
        before, after = capture_around(bb, m, mods)
        for l in range(L):
            alpha, v = getattr(m, f"{kind}_strength")[l].detach(), getattr(m, f"{kind}_vectors")[l].detach()
            assert torch.equal(after[l], before[l] + alpha * v), (kind, l)
            assert not torch.equal(after[l], before[l])


def test_head_granularity_shifts_each_head_before_o_proj(bb):
    m = randomise(M2IV(bb, M2IVConfig(granularity="head")))
    L, H = len(bb.decoder_layers()), bb.text_config.num_attention_heads
    before, after = capture_around(bb, m, [bb.attention(l).o_proj for l in range(L)], pre=True)
    for l in range(L):
        B, T, D = before[l].shape
        dh = D // H
        alpha, v = m.mha_strength[l].detach(), m.mha_vectors[l].detach()  # (H,), (H, dh)
        expect = before[l].clone()
        for h in range(H):  # plain: head h occupies features [h*dh, (h+1)*dh)
            expect[..., h * dh:(h + 1) * dh] = before[l][..., h * dh:(h + 1) * dh] + alpha[h] * v[h]
        assert torch.equal(after[l], expect)


def test_last_positions_mask_and_generation_fallback(bb):
    eps = episodes(0)
    batch = bb.assemble_episodes(eps, with_answer=True)
    mask = generation_mask(batch)
    for b in range(len(eps)):
        ans = batch.positions(b, "answer", 0)
        n_real = int(batch.attention_mask[b].sum())
        assert mask[b].nonzero().flatten().tolist() == list(range(ans[0] - 1, n_real))
    # without a mask (generation) only the newest token is shifted
    m = randomise(M2IV(bb, M2IVConfig(positions="last")))
    before, after = capture_around(bb, m, [bb.mlp(0)])
    diff = (after[0] != before[0]).any(-1)  # (B, T)
    assert diff[:, -1].all() and not diff[:, :-1].any()
    assert torch.equal(after[0][:, -1], before[0][:, -1] + m.mlp_strength[0].detach() * m.mlp_vectors[0].detach())


@pytest.mark.parametrize("granularity,positions", [("layer", "all"), ("head", "all"), ("layer", "last")])
def test_strength_zero_is_bit_identical(bb, granularity, positions):
    m = randomise(M2IV(bb, M2IVConfig(granularity=granularity, positions=positions)))
    with torch.no_grad():
        m.mha_strength.zero_()
        m.mlp_strength.zero_()
    eps = episodes(0)
    assert torch.equal(logits_of(bb, eps, m), logits_of(bb, eps))


def test_attach_detach_leaves_the_backbone_bit_identical(bb):
    eps = episodes(0)
    base = logits_of(bb, eps)
    m = randomise(M2IV(bb, M2IVConfig(granularity="head", positions="last")))
    assert not torch.equal(logits_of(bb, eps, m), base)
    assert torch.equal(logits_of(bb, eps), base)
    with pytest.raises(RuntimeError):  # an error inside the block still detaches
        with m.attached():
            raise RuntimeError("boom")
    assert torch.equal(logits_of(bb, eps), base)


# -- losses ------------------------------------------------------------------------------------
def plain_synergy(a, m, gamma, norm):
    """Re-implementation as in the spec §5(c): build C, MSE of its diagonal to 1, mean off-diagonal²."""
    dim = 1 if norm == "token" else 0
    za = a / a.norm(dim=dim, keepdim=True)
    zm = m / m.norm(dim=dim, keepdim=True)
    C = za.T @ zm
    d = C.shape[0]
    diag = torch.diagonal(C)
    off = C[~torch.eye(d, dtype=torch.bool)]
    return ((diag - 1) ** 2).mean() + gamma * (off ** 2).mean()


@pytest.mark.parametrize("n,d", [(5, 16), (40, 8)])  # Gram-matrix path (n < d) and direct path
@pytest.mark.parametrize("norm", ["token", "feature"])
def test_synergy_loss_matches_a_plain_reimplementation(n, d, norm):
    g = torch.Generator().manual_seed(n + d)
    a, m = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)
    got = synergy_loss(a, m, 0.1, norm)
    assert got.item() == pytest.approx(plain_synergy(a, m, 0.1, norm).item(), rel=1e-5, abs=1e-6)
    # identical views, feature normalisation: C is a correlation matrix with unit diagonal
    same = synergy_loss(a, a, 0.0, "feature")
    assert same.item() == pytest.approx(0.0, abs=1e-6)


def test_loss_terms_match_plain_recomputation(bb):
    cfg = M2IVConfig(train_shots=2, kl_weight=0.3)
    m = randomise(M2IV(bb, cfg), seed=3)
    with torch.no_grad():
        m.mha_vectors.mul_(0.05)
        m.mlp_vectors.mul_(0.05)
    eps = episodes(2)
    loss, parts = m.loss(eps)
    L = len(bb.decoder_layers())
    mlps = [bb.mlp(l) for l in range(L)]
    # teacher: the bare backbone reading the 2-shot episodes
    tb = bb.assemble_episodes(eps, with_answer=True)
    with torch.no_grad(), capture_outputs(mlps) as t_store:
        bb.forward(tb)
    # student: the adapted backbone reading the query alone
    sb = bb.assemble_episodes([Episode([], e.query) for e in eps], with_answer=True)
    with torch.no_grad(), m.attached(), capture_outputs(mlps) as s_store:
        s_logits = bb.forward(sb)
    ce = bb.loss(sb, s_logits)
    align, n = 0.0, 0
    for l in range(L):
        for b in range(len(eps)):
            t = t_store[l][b, query_positions(tb, b)]
            s = s_store[l][b, query_positions(sb, b)]
            assert t.shape == s.shape and t.shape[0] > 0
            align += (1 - F.cosine_similarity(s, t, dim=-1)).sum().item()
            n += t.shape[0]
    align /= n
    assert parts["ce"] == pytest.approx(ce.item(), rel=1e-5)
    assert parts["align"] == pytest.approx(align, rel=1e-4)
    total = 0.5 * parts["ce"] + 1.0 * parts["align"] + 0.3 * parts["kl"] + 0.8 * parts["synergy"]
    assert loss.item() == pytest.approx(total, rel=1e-5)


def test_teacher_average_over_sets_equals_mean_of_separate_passes(bb):
    m = M2IV(bb, M2IVConfig(train_shots=4, teacher_sets=2))
    eps = episodes(4)
    got = m.teacher_outputs(eps)
    L = len(bb.decoder_layers())
    per_set = []
    for j in range(2):  # plain: demos [2j, 2j+2) of every episode, then its query
        sub = [Episode(list(e.demos[2 * j:2 * j + 2]), e.query) for e in eps]
        batch = bb.assemble_episodes(sub, with_answer=True)
        with torch.no_grad(), capture_outputs([bb.mlp(l) for l in range(L)]) as store:
            bb.forward(batch)
        pos = [query_positions(batch, b) for b in range(len(sub))]
        per_set.append(torch.stack([gather_rows(store[l], pos) for l in range(L)]))
    assert torch.allclose(got.mlp, (per_set[0] + per_set[1]) / 2, atol=1e-6, rtol=0)
    assert not torch.allclose(per_set[0], per_set[1], atol=1e-3)  # the sets really differ
    assert torch.allclose(got.logits.exp().sum(-1), torch.ones(got.logits.shape[0]), atol=1e-5)


def test_demo_sets_are_disjoint_and_share_the_query():
    ep = many_shot_episode("binding", 3, 2, seed=0, index=5)
    assert ep.k == 6
    sets = split_demo_sets(ep, 2)
    assert [s.demos for s in sets] == [ep.demos[:3], ep.demos[3:]]
    assert all(s.query is ep.query for s in sets)
    for s in sets:  # every demo agrees with the query's hidden binding
        assert all(d.answer == ep.info["binding"][d.label] for d in s.demos)
    with pytest.raises(ValueError, match="multiple of teacher_sets"):
        split_demo_sets(ep, 4)


# -- parameters, gradients, persistence ---------------------------------------------------------
def test_parameter_count_matches_the_formula(bb):
    L, d, H = 4, 128, 4
    assert len(bb.decoder_layers()) == L and bb.hidden_size == d
    assert M2IV(bb).num_trainable() == M2IV(bb).expected_num_parameters() == 2 * L * d + 2 * L == 1032
    head = M2IV(bb, M2IVConfig(granularity="head"))
    assert head.num_trainable() == head.expected_num_parameters() == L * H * (d // H) + L * H + L * d + L
    fixed = M2IV(bb, M2IVConfig(learn_strength=False))
    assert fixed.num_trainable() == fixed.expected_num_parameters() == 2 * L * d
    one = M2IV(bb, M2IVConfig(sites="mlp", synergy_weight=0.0))
    assert one.num_trainable() == one.expected_num_parameters() == L * d + L


def test_param_groups_give_each_branch_its_learning_rate(bb):
    m = M2IV(bb)
    groups = m.param_groups(1e-3)
    # the trainer sets each group's lr to TrainConfig.lr (default 5e-3) x lr_scale
    got = {n: (g["lr_scale"] * 5e-3, g["weight_decay"]) for n, p in m.named_parameters() for g in groups
           if any(q is p for q in g["params"])}
    assert got == {"mha_vectors": (5e-3, 1e-3), "mha_strength": (5e-3, 0.0),
                   "mlp_vectors": (1e-2, 1e-3), "mlp_strength": (1e-2, 0.0)}
    assert sum(len(g["params"]) for g in groups) == len(m.trainable_parameters())



def test_save_load_round_trip_and_refusals(bb, tmp_path):
    m = randomise(M2IV(bb, M2IVConfig(granularity="head", positions="last", teacher_sets=2, train_shots=4)))
    m.save(tmp_path / "a")
    back = M2IV.load(tmp_path / "a", bb)
    assert back.config == m.config
    for (k, v), (k2, v2) in zip(m.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    eps = episodes(0)
    assert torch.equal(logits_of(bb, eps, back), logits_of(bb, eps, m))
    with pytest.raises(AdapterLoadError, match="another backbone"):
        M2IV.load(tmp_path / "a", TeachingVLM.create(seed=1))
    assert get_method("m2iv") is M2IV


@pytest.mark.parametrize("kwargs,msg", [
    (dict(teacher_sets=0), "teacher_sets"), (dict(train_shots=3, teacher_sets=2), "multiple"),
    (dict(sites="attn"), "sites"), (dict(granularity="neuron"), "granularity"), (dict(positions="first"), "positions"),
    (dict(strength_init=50.0), "strength_init"), (dict(ce_weight=-1.0), "ce_weight"), (dict(align_loss="l1"), "align_loss"),
    (dict(sites="mha"), "synergy_weight"), (dict(synergy_norm="batch"), "synergy_norm"), (dict(learn_strength="yes"), "learn_strength"),
    (dict(ce_weight=0.0, align_weight=0.0, synergy_weight=0.0), "at least one"), (dict(mlp_lr_scale=-2.0), "mlp_lr_scale"),
])
def test_config_out_of_range_is_a_clear_error(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        M2IVConfig(**kwargs)


def test_loss_refuses_to_run_while_attached(bb):
    m = M2IV(bb, M2IVConfig(train_shots=2))
    with m.attached(), pytest.raises(RuntimeError, match="outside"):
        m.loss(episodes(2))


# -- quantised backbones and the trainer --------------------------------------------------------
@pytest.fixture(scope="module")
def saved_backbone(tmp_path_factory, bb):
    path = tmp_path_factory.mktemp("vlm")
    bb.save(path)
    return path


@pytest.mark.parametrize("quant", ["8bit", "4bit"])
def test_quantised_backbone_forward_and_one_step(saved_backbone, quant):
    qb = TeachingVLM.load(saved_backbone, quant=quant)
    qb.model.requires_grad_(False)
    m = M2IV(qb, M2IVConfig(train_shots=2, granularity="head" if quant == "4bit" else "layer"))
    eps = episodes(0)
    base = logits_of(qb, eps)
    assert torch.isfinite(logits_of(qb, eps, m)).all()
    assert torch.equal(logits_of(qb, eps), base)
    opt = torch.optim.AdamW(m.param_groups(0.0), lr=1e-2)
    loss, parts = m.loss(episodes(2))
    assert math.isfinite(loss.item())
    loss.backward()
    assert all(p.grad is None for p in qb.model.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in m.parameters())
    before = [p.detach().clone() for p in m.parameters()]
    opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, m.parameters()))


def test_trainer_runs_and_lowers_the_loss(bb):
    m = M2IV(bb, M2IVConfig(train_shots=4, teacher_sets=2))
    res = train(m, TrainConfig(task="binding", steps=3, batch_size=2, samples=1, warmup_ratio=0.0, lr=5e-2), progress=False)
    assert res.steps == 3 and all(math.isfinite(x) for x in res.losses)
    assert res.losses[-1] < res.losses[0]
    assert set(res.parts[0]) == {"ce", "align", "synergy", "loss"}
