"""Multimodal task vectors (Huang et al. 2024): mean head activations, head scores and the
zero-shot replacement, against one-prompt-at-a-time re-computations with hand-written hooks."""
from __future__ import annotations

import pytest
import torch

from mmict_core.data import Episode, make_episode
from mmict_core.methods import create_method


def episodes(k: int, n: int = 2):
    return [make_episode("operator", k, seed=0, index=i, split="val") for i in range(n)]


def run_one(vlm, ep: Episode, patch=None, with_answer=True):
    """One prompt, no padding: (o_proj inputs per layer at the prompt end (H, d), P(first answer
    token) or None).  ``patch = [(layer, head, value (d,)), ...]`` written at the prompt end first."""
    b = vlm.assemble_episodes([ep], with_answer=with_answer)
    lab = (b.labels[0] != -100).nonzero()
    end = int(lab[0]) - 1 if len(lab) else b.inputs_embeds.shape[1] - 1
    H, d = vlm.num_heads, vlm.head_dim
    seen, hooks = {}, []
    for l in range(vlm.num_layers):
        def hook(mod, args, l=l):
            x = args[0].clone()
            for pl, ph, v in patch or []:
                if pl == l:
                    x[0, end, ph * d:(ph + 1) * d] = v
            seen[l] = x[0, end].view(H, d).clone()
            return (x,)
        hooks.append(vlm.attention(l).o_proj.register_forward_pre_hook(hook))
    try:
        logits = vlm.forward(b)
    finally:
        for h in hooks:
            h.remove()
    p = logits[0, end].softmax(-1)[b.labels[0, end + 1]] if len(lab) else None
    return seen, p, logits[0]


@torch.no_grad()
def test_means_scores_and_heads_match_one_prompt_at_a_time(vlm):
    m = create_method("mtv", vlm, contexts=2, heads=3)
    eps = episodes(4)
    out = m.extract(eps)
    L, H = vlm.num_layers, vlm.num_heads
    for b, ep in enumerate(eps):
        ctx = [Episode(demos=[d for i, d in enumerate(ep.demos) if i != j], query=ep.demos[j]) for j in (2, 3)]
        z = torch.stack([torch.stack([run_one(vlm, c)[0][l] for l in range(L)]) for c in ctx]).mean(0)  # (L, H, d)
        assert torch.allclose(out["z_mean"][b], z, atol=1e-4)
        score = torch.zeros(L, H)
        for c in ctx:  # the dummy query at zero shots, one head replaced by its many-shot mean
            zero = Episode(demos=[], query=c.query)
            p0 = run_one(vlm, zero)[1]
            for l in range(L):
                for j in range(H):
                    score[l, j] += (run_one(vlm, zero, [(l, j, z[l, j])])[1] - p0) / len(ctx)
        assert torch.allclose(out["score"][b], score, atol=1e-4)
        assert out["heads"][b] == [(int(i) // H, int(i) % H) for i in score.flatten().topk(3).indices]


@torch.no_grad()
def test_zero_shot_query_gets_the_chosen_heads_replaced(vlm):
    m = create_method("mtv", vlm, contexts=2, heads=3)
    eps = episodes(4)
    with m.attached():
        batch = m.batch(eps, with_answer=False, padding_side="left")
        logits = vlm.forward(batch)
    ex = m.last
    for b, ep in enumerate(eps):
        zero = Episode(demos=[], query=ep.query)
        patch = [(l, j, ex["z_mean"][b, l, j]) for l, j in ex["heads"][b]]
        _, _, ref = run_one(vlm, zero, patch, with_answer=False)  # the same replacement, by hand, unpadded
        assert torch.allclose(logits[b, -1], ref[-1], atol=1e-4)
        _, _, plain = run_one(vlm, zero, None, with_answer=False)
        T = plain.shape[0]
        assert torch.allclose(logits[b, -T:-1], plain[:-1], atol=1e-5)  # only the last position changes
    assert m.num_trainable() == 0 == m.expected_num_parameters()


def test_too_few_demos_and_bad_heads_say_so(vlm):
    with pytest.raises(ValueError, match="at least 2 demonstrations"):
        create_method("mtv", vlm).generate(episodes(1), max_new_tokens=2)
    with pytest.raises(ValueError, match="heads"):
        create_method("mtv", vlm, heads=vlm.num_layers * vlm.num_heads + 1)


@torch.no_grad()
def test_many_shot_means_read_consecutive_prompts_of_per_context_demos(vlm):
    """per_context = 3, contexts = 2 on 7 demos: prompts [d0 d1 -> d2] and [d3 d4 -> d5]; d6 is not read."""
    m = create_method("mtv", vlm, contexts=2, heads=3, per_context=3)
    eps = episodes(7)
    out = m.extract(eps)
    L = vlm.num_layers
    for b, ep in enumerate(eps):
        ctx = [Episode(demos=ep.demos[0:2], query=ep.demos[2]), Episode(demos=ep.demos[3:5], query=ep.demos[5])]
        z = torch.stack([torch.stack([run_one(vlm, c)[0][l] for l in range(L)]) for c in ctx]).mean(0)  # (L, H, d)
        assert torch.allclose(out["z_mean"][b], z, atol=1e-4)
    with pytest.raises(ValueError, match="per_context"):
        create_method("mtv", vlm, per_context=1)
    with pytest.raises(ValueError, match="need at least 8 demonstrations, got 7"):
        create_method("mtv", vlm, per_context=8).extract(eps)
