"""Function vectors (Todd et al. 2024): mean head outputs, indirect effects, the vector and its
addition, each against a plain one-prompt-at-a-time re-computation."""
from __future__ import annotations

import pytest
import torch

from mmict_core.data import Episode, make_episode
from mmict_core.methods import create_method
from mmict_core.methods.distill import capture_outputs
from mmict_core.methods.function_vector import shuffled_answers
from mmict_core.workbench import compare_one


def episodes(k: int, n: int = 2):
    return [make_episode("operator", k, seed=0, index=i, split="val") for i in range(n)]


def contexts(ep: Episode, n: int) -> list[Episode]:
    return [Episode(demos=[d for i, d in enumerate(ep.demos) if i != j], query=ep.demos[j]) for j in range(ep.k - n, ep.k)]


def run_one(vlm, ep: Episode, patch=None):
    """One prompt, no padding: (o_proj inputs per layer at the prompt end (H·d,), P(first answer token)).
    ``patch = (layer, head, value (d,))`` writes a head's slot at the prompt end first."""
    b = vlm.assemble_episodes([ep], with_answer=True)
    first = int((b.labels[0] != -100).nonzero()[0])
    end, d = first - 1, vlm.head_dim
    seen, hooks = {}, []
    for l in range(vlm.num_layers):
        def hook(mod, args, l=l):
            x = args[0]
            if patch is not None and patch[0] == l:
                x = x.clone()
                x[0, end, patch[1] * d:(patch[1] + 1) * d] = patch[2]
            seen[l] = x[0, end].clone()
            return (x,)
        hooks.append(vlm.attention(l).o_proj.register_forward_pre_hook(hook))
    try:
        logits = vlm.forward(b)
    finally:
        for h in hooks:
            h.remove()
    return seen, logits[0, end].softmax(-1)[b.labels[0, first]]


@torch.no_grad()
def test_extraction_matches_one_prompt_at_a_time(vlm):
    m = create_method("function-vector", vlm, contexts=2, heads=2)
    eps = episodes(5)
    out = m.extract(eps)
    L, H, d = vlm.num_layers, vlm.num_heads, vlm.head_dim
    for b, ep in enumerate(eps):
        ctx = contexts(ep, 2)
        # mean head outputs over the clean prompts
        z = torch.stack([torch.stack([run_one(vlm, c)[0][l] for l in range(L)]) for c in ctx]).mean(0).view(L, H, d)
        assert torch.allclose(out["z_mean"][b], z, atol=1e-4)
        # average indirect effect: P(y | shuffled prompt, head := mean) - P(y | shuffled prompt)
        aie = torch.zeros(L, H)
        for c in ctx:
            bad = shuffled_answers(c)
            p0 = run_one(vlm, bad)[1]
            for l in range(L):
                for j in range(H):
                    aie[l, j] += (run_one(vlm, bad, (l, j, z[l, j]))[1] - p0) / len(ctx)
        assert torch.allclose(out["aie"][b], aie, atol=1e-4)
        # the FV: the top heads' W_O slices times their mean outputs, summed
        top = aie.flatten().topk(2).indices
        heads = [(int(i) // H, int(i) % H) for i in top]
        assert out["heads"][b] == heads
        fv = sum(vlm.attention(l).o_proj.weight[:, j * d:(j + 1) * d] @ z[l, j] for l, j in heads)
        assert torch.allclose(out["fv"][b], fv, atol=1e-4)


def test_shuffled_answers_rotate_the_demo_answers():
    ep = episodes(4, 1)[0]
    bad = shuffled_answers(ep)
    assert [d.answers for d in bad.demos] == [ep.demos[(i + 1) % 4].answers for i in range(4)]
    assert [d.prompt for d in bad.demos] == [d.prompt for d in ep.demos] and bad.query is ep.query


@torch.no_grad()
def test_fv_is_added_at_the_prompt_end(vlm):
    """Added to the last decoder layer's output: the prompt end's logits are lm_head(norm(h + FV))."""
    m = create_method("function-vector", vlm, layer=vlm.num_layers - 1, heads=3)
    eps = episodes(4)
    zero = vlm.assemble_episodes([Episode([], e.query) for e in eps], with_answer=False, padding_side="left")
    with capture_outputs([vlm.decoder_layers()[-1]]) as h:
        plain = vlm.forward(zero)
    with m.attached():
        batch = m.batch(eps, with_answer=False, padding_side="left")
        logits = vlm.forward(batch)
    fv = m.last["fv"]
    lm = vlm.language_model
    assert torch.allclose(logits[:, -1], lm.lm_head(lm.model.norm(h[0][:, -1] + fv)), atol=1e-4)
    assert torch.equal(logits[:, :-1], plain[:, :-1])
    assert m.layer == vlm.num_layers - 1 and create_method("function-vector", vlm).layer == vlm.num_layers // 3


def test_bad_settings_and_too_few_demos_say_so(vlm):
    m = create_method("function-vector", vlm)
    with pytest.raises(ValueError, match="at least 3 demonstrations"):
        m.generate(episodes(2), max_new_tokens=2)
    assert "at least 2 demonstrations" in compare_one(vlm, episodes(0, 1)[0], {"fv": m})[0].error
    with pytest.raises(ValueError, match="heads"):
        create_method("function-vector", vlm, heads=vlm.num_layers * vlm.num_heads + 1)
    assert m.num_trainable() == 0 == m.expected_num_parameters()
