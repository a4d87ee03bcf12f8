"""Task vectors (Hendel et al. 2023): extraction and patching against a plain re-computation."""
from __future__ import annotations

import pytest
import torch

from mmict_core.data import Episode, make_episode
from mmict_core.methods import create_method
from mmict_core.workbench import compare_one


def episodes(k: int, n: int = 2):
    # indices 0 and 1 have prompts of different lengths: batches are padded
    return [make_episode("shapes-vqa", k, seed=0, index=i, split="val") for i in range(n)]


def hidden_after(vlm, episode: Episode, layer: int) -> torch.Tensor:
    """Output of decoder layer ``layer`` at the last position of ``episode``'s prompt, one row, no
    padding, read from transformers' own ``output_hidden_states``.  (d,)"""
    b = vlm.assemble_episodes([episode], with_answer=False)
    out = vlm.language_model(inputs_embeds=b.inputs_embeds, attention_mask=b.attention_mask, output_hidden_states=True)
    return out.hidden_states[layer + 1][0, -1].float()


@pytest.mark.parametrize("contexts", [1, 3])
def test_extracted_vector_is_the_mean_dummy_query_state(vlm, contexts):
    m = create_method("task-vector", vlm, layer=1, contexts=contexts)
    eps = episodes(4)
    theta = m.extract(eps)  # (B, d), batched and left-padded
    for b, ep in enumerate(eps):
        states = []
        for j in range(ep.k - contexts, ep.k):  # leave demo j out as the dummy query
            ctx = Episode(demos=[d for i, d in enumerate(ep.demos) if i != j], query=ep.demos[j])
            states.append(hidden_after(vlm, ctx, 1))
        assert torch.allclose(theta[b], torch.stack(states).mean(0), atol=1e-4)
    assert m.layer == 1 and create_method("task-vector", vlm).layer == vlm.num_layers // 3


def test_patch_at_the_last_layer_gives_lm_head_of_the_vector(vlm):
    """Patched at the last decoder layer, the prompt end's logits are lm_head(norm(θ)) exactly."""
    L = vlm.num_layers
    m = create_method("task-vector", vlm, layer=L - 1)
    eps = episodes(3)
    with torch.no_grad():
        theta = m.extract(eps)
        plain = vlm.forward(vlm.assemble_episodes([Episode([], e.query) for e in eps], with_answer=False,
                                                  padding_side="left"))
        with m.attached():
            batch = m.batch(eps, with_answer=False, padding_side="left")
            logits = vlm.forward(batch)
        lm = vlm.language_model
        expect = lm.lm_head(lm.model.norm(theta))  # (B, V)
    assert batch.inputs_embeds.shape[1] == plain.shape[1]  # the query is read at zero shots
    assert torch.allclose(logits[:, -1], expect, atol=1e-4)
    assert torch.equal(logits[:, :-1], plain[:, :-1])  # causal: the positions before are untouched
    assert not torch.allclose(logits[:, -1], plain[:, -1], atol=1e-3)


def test_patch_position_with_the_answer_in_the_input(vlm):
    """Right-padded, answer appended: θ goes where the first answer token is predicted."""
    m = create_method("task-vector", vlm, layer=vlm.num_layers - 1)
    eps = episodes(3)
    with torch.no_grad(), m.attached():
        batch = m.batch(eps, with_answer=True)
        logits = vlm.forward(batch)
        theta = m.extract(eps)
    lm = vlm.language_model
    for b in range(len(eps)):
        first = int((batch.labels[b] != -100).nonzero()[0])
        assert torch.allclose(logits[b, first - 1], lm.lm_head(lm.model.norm(theta[b])), atol=1e-4)


def test_generation_patches_the_prefill_only(vlm):
    m = create_method("task-vector", vlm, layer=2)
    eps = episodes(3)
    with torch.no_grad():
        out = m.generate(eps, max_new_tokens=4)
        with m.attached():
            logits = vlm.forward(m.batch(eps, with_answer=False, padding_side="left"))
    first = [vlm.decode([int(t)]) for t in logits[:, -1].argmax(-1)]
    for o, f in zip(out, first):
        assert o.split(" ")[0].startswith(f) or f == ""
    with torch.no_grad(), m.attached():  # decoding steps (one position each) are never patched
        assert m.generate(eps, max_new_tokens=4) == out


def test_needs_two_demonstrations_and_says_so(vlm):
    m = create_method("task-vector", vlm)
    with pytest.raises(ValueError, match="at least 2 demonstrations"):
        m.generate(episodes(1), max_new_tokens=2)
    row = compare_one(vlm, episodes(0, 1)[0], {"task-vector": m})[0]
    assert "at least 2 demonstrations" in row.error
    with pytest.raises(ValueError, match="layer"):
        create_method("task-vector", vlm, layer=vlm.num_layers)
    assert m.num_trainable() == 0 == m.expected_num_parameters()
