"""I2CL (Li et al. 2025): context vectors and their injection against a plain re-computation."""
from __future__ import annotations

import torch

from mmict_core.data import Episode, make_episode
from mmict_core.methods import create_method
from mmict_core.methods.distill import capture_outputs


def episodes(k: int, n: int = 2):
    return [make_episode("shapes-vqa", k, seed=0, index=i, split="val") for i in range(n)]


@torch.no_grad()
def test_context_vectors_are_mean_last_token_module_outputs(vlm):
    m = create_method("i2cl", vlm)
    eps = episodes(3)
    ctx = m.context_vectors(eps)  # (B, L, 2, d), batched and padded
    L = vlm.num_layers
    mods = [vlm.attention(0), vlm.mlp(0), vlm.attention(L - 1), vlm.mlp(L - 1)]
    for b, ep in enumerate(eps):
        outs = []
        for d in ep.demos:  # each demo alone, unpadded: its last token
            batch = vlm.assemble_episodes([Episode(demos=[], query=d)], with_answer=True)
            with capture_outputs(mods) as o:
                vlm.forward(batch)
            outs.append(torch.stack([x[0, -1].float() for x in o]))
        mean = torch.stack(outs).mean(0)  # (4, d)
        got = torch.stack([ctx[b, 0, 0], ctx[b, 0, 1], ctx[b, L - 1, 0], ctx[b, L - 1, 1]])
        assert torch.allclose(got, mean, atol=1e-4)


@torch.no_grad()
def test_injection_is_alpha_output_plus_beta_context(vlm):
    """Layer 0 sees the same input with or without I2CL: its attention output becomes α·o + β·c at
    every query position, and the MLP's follows the same rule on its (changed) input."""
    m = create_method("i2cl", vlm, alpha_init=0.7, beta_init=0.3)
    m.eval()
    eps = episodes(3)
    with m.attached():
        batch = m.batch(eps, with_answer=True)
        ctx = m._ctx
        with capture_outputs([vlm.attention(0)]) as inj:
            vlm.forward(batch)
    with capture_outputs([vlm.attention(0)]) as plain:
        vlm.forward(batch)
    expect = 0.7 * plain[0] + 0.3 * ctx[:, 0, 0][:, None]  # (B, T, d)
    assert torch.allclose(inj[0], expect, atol=1e-5)
    assert m.num_trainable() == m.expected_num_parameters() == 4 * vlm.num_layers


def test_strengths_get_gradients_and_noise_only_in_training(vlm):
    m = create_method("i2cl", vlm, noise=0.5)
    eps = episodes(2)
    m.eval()
    with torch.no_grad(), m.attached():
        a = vlm.forward(m.batch(eps, with_answer=True))
        b = vlm.forward(m.batch(eps, with_answer=True))
    assert torch.equal(a, b)  # no noise at inference
    m.train()
    loss, _ = m.loss(eps)
    loss.backward()
    assert m.strengths.grad is not None and m.strengths.grad.abs().sum() > 0
