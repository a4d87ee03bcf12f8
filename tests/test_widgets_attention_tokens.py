"""The attention explorer's token × token map: one head's weights equal an independent recomputation
from the query and keys the layer received (one softmax over [virtual; real] keys, the real part),
hover names both tokens, image tokens are shaded, and it shares a row with the per-token view."""
import numpy as np
import pytest
import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from mmict_core.methods.base import swap_attr
from mmict_core.methods.hificl.attention import hificl_attention_forward, hificl_mask
from mmict_core.widgets import AttentionExplorer
from mmict_core.workbench import Session, make_method

LAYER, HEAD = 1, 2


@pytest.fixture(scope="module")
def explorer(vlm, tmp_path_factory):
    s = Session(vlm, library_root=tmp_path_factory.mktemp("lib"), task="binding", pool_size=6, seed=2)
    m = make_method(vlm, "hificl")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # untrained virtual keys are ~0 (K_B * 0.01): make them matter
        for p in m.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    s.adapters["h"] = m
    a = AttentionExplorer(s)
    a.show_button.click()
    return a


def _recorded_qk(method, episode):
    """query/key of layer LAYER as HiFICL's own function receives them (a recording wrapper)."""
    rec = {}
    bb = method.backbone

    def recording(module, query, key, value, attention_mask, **kw):
        if module is bb.attention(LAYER):
            rec.update(q=query.detach(), k=key.detach(), s=kw["scaling"])
        return hificl_attention_forward(module, query, key, value, attention_mask, **kw)

    AttentionInterface.register("test_token_map_rec", recording)
    AttentionMaskInterface.register("test_token_map_rec", hificl_mask)
    batch = method.batch([episode], with_answer=True, padding_side="right")
    with torch.no_grad(), method.attached():
        swap = swap_attr(bb.text_config, "_attn_implementation", "test_token_map_rec")
        try:
            bb.forward(batch)
        finally:
            swap.remove()
    return rec


def test_token_map_is_one_heads_softmax_over_virtual_and_real_keys(explorer):
    a = explorer
    m = a.session.adapters["h"]
    a.layer.value, a.head.value = LAYER, HEAD
    z = np.asarray(a.token_map.data[0].z, dtype=np.float64)
    rec = _recorded_qk(m, a.session.episode())
    q = rec["q"][0, HEAD].double()  # (T, d)
    H = rec["q"].shape[1]
    k = rec["k"][0, HEAD // (H // rec["k"].shape[1])].double()  # (T, d): the key head serving this query head
    K_learn = (m.K_A[LAYER, HEAD].double() @ m.K_B[LAYER, HEAD].double()).detach()  # (n, d)
    T, n = q.shape[0], K_learn.shape[0]
    real = (q @ k.T * rec["s"]).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    p = torch.softmax(torch.cat([q @ K_learn.T * rec["s"], real], -1), -1)  # (T, n + T)
    assert z.shape == (T, T)
    assert np.allclose(z, p[:, n:].numpy(), atol=1e-5)
    # the rest of each row is the virtual share the other views show
    assert np.allclose(z.sum(-1) + a.attention.virtual_mass[LAYER, HEAD], 1.0, atol=1e-5)
    a.layer.value = -1  # every layer: the mean of the per-layer maps
    assert np.allclose(a.token_map.data[0].z, a.tokens.weights[:, HEAD].mean(0), atol=1e-6)


def test_token_map_names_tokens_and_shades_images(explorer):
    a = explorer
    a.layer.value, a.head.value = 0, 0
    tok = a.tokens
    fig = a.token_map.figure
    T = len(tok.labels)
    custom = fig.data[0].customdata
    i, j = T - 1, 1
    assert str(tok.labels[i]) in custom[i][j][0] and str(tok.labels[j]) in custom[i][j][1]
    assert "query %{customdata[0]}" in fig.data[0].hovertemplate
    image = [p for p in range(T) if tok.roles[p] == "image"]
    assert image, "the episode has an image"
    bands = [(s.x0, s.x1) for s in fig.layout.shapes if s.xref == "x"]
    assert (image[0] - 0.5, image[-1] + 0.5) in bands  # one contiguous band over the image tokens
    assert list(fig.layout.xaxis.ticktext) == [f"{p} {lab}" for p, lab in enumerate(tok.labels)]


def test_token_map_shares_a_row_with_the_head_view(explorer):
    a = explorer
    row = next(c for c in a.widget.children if a.token_map.widget in getattr(c, "children", ()))
    assert list(row.children) == [a.head_view.widget, a.token_map.widget]
    for w in row.children:  # flexible halves, no pixel width: the row fits a 1280 px notebook
        assert w.layout.flex == "1 1 0%" and w.layout.min_width == "0" and w.layout.width in (None, "auto")
    assert a.token_map.figure.layout.width is None


def test_plain_model_weights_equal_eager_attention_probabilities(vlm):
    """Without an adapter the rows sum to 1 and equal the probabilities transformers' eager attention
    returns (read from each attention module's output), whichever implementation the model runs."""
    from mmict_core.data import get_task, make_episode
    from mmict_core.inspect.token_attention import token_attention

    m = make_method(vlm, "icl", shots=2)
    ep = make_episode(get_task("binding"), 2, seed=0, index=3, split="test")
    sdpa = token_attention(m, ep)
    probs = {}
    hooks = [vlm.attention(l).register_forward_hook(lambda mod, a, out, l=l: probs.__setitem__(l, out[1][0].detach()))
             for l in range(vlm.num_layers)]
    swap = swap_attr(vlm.text_config, "_attn_implementation", "eager")
    try:
        eager = token_attention(m, ep)  # the recording wraps eager too
        with torch.no_grad():
            vlm.forward(m.batch([ep], with_answer=True, padding_side="right"))
    finally:
        swap.remove()
        for h in hooks:
            h.remove()
    want = torch.stack([probs[l] for l in range(vlm.num_layers)]).numpy()  # (L, H, T, T)
    assert sdpa.virtual_mass is None and sdpa.weights.shape == want.shape
    assert np.allclose(sdpa.weights.sum(-1), 1.0, atol=1e-5)
    assert np.allclose(sdpa.weights, want, atol=1e-5) and np.allclose(eager.weights, want, atol=1e-5)
    assert vlm.text_config._attn_implementation == "sdpa"  # restored
