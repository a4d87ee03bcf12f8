"""The teaching VLM backbone: episode assembly, padding, save/load, quantised loading."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from mmict_core.backbones import TeachingVLM
from mmict_core.backbones.base import IGNORE
from mmict_core.data import Episode, Example, make_episode


def _img(v: int) -> np.ndarray:
    return np.full((32, 32, 3), v, dtype=np.uint8)


def _episode() -> Episode:
    demos = [Example([_img(10)], "what is this ?", ["dax"]), Example([_img(200)], "what colour is the shape in the top left ?", ["red"])]
    return Episode(demos, Example([_img(90)], "what is this ?", ["wug"]))


def test_episode_layout_places_every_token(vlm):
    ep = _episode()
    b = vlm.assemble_episodes([ep], with_answer=True, loss_on="query")
    ids = b.token_ids[0].tolist()
    Q = vlm.num_query_tokens
    # independent layout: BOS, then per item prompt ids, Q image slots, the <answer> marker, answer ids + EOS
    marker = vlm.tokenizer.token_to_id("<answer>")
    expected = [vlm.bos_token_id]
    for ex in list(ep.demos) + [ep.query]:
        expected += (vlm.encode_text(ex.prompt) + [vlm.image_token_id] * Q + [marker] + vlm.encode_text(ex.answer)
                     + [vlm.eos_token_id])
    assert ids == expected
    assert b.attention_mask.tolist() == [[1] * len(expected)]
    # each image slot carries that item's own image tokens
    feats = vlm.encode_images([ex.images[0] for ex in list(ep.demos) + [ep.query]],
                              [ex.prompt for ex in list(ep.demos) + [ep.query]])
    for item in range(3):
        pos = b.positions(0, "image", item)
        assert len(pos) == Q
        torch.testing.assert_close(b.inputs_embeds[0, pos], feats[item], rtol=0, atol=0)
    # text positions carry the LM's own embeddings of their ids
    pp = b.positions(0, "prompt", 1)
    torch.testing.assert_close(b.inputs_embeds[0, pp], vlm.embed_ids(torch.tensor([ids[i] for i in pp])))
    # loss only on the query's answer + EOS
    lab = b.labels[0]
    trained = [i for i in range(len(ids)) if lab[i] != IGNORE]
    assert trained == b.positions(0, "answer", 2)
    assert [ids[i] for i in trained] == vlm.encode_text("wug") + [vlm.eos_token_id]


def test_loss_on_all_answers_and_without_answer(vlm):
    ep = _episode()
    b = vlm.assemble_episodes([ep], with_answer=True, loss_on="all")
    trained = (b.labels[0] != IGNORE).nonzero().flatten().tolist()
    assert trained == b.positions(0, "answer")
    nb = vlm.assemble_episodes([ep], with_answer=False)
    assert nb.positions(0, "answer", 2) == []
    assert nb.token_ids.shape[1] == b.token_ids.shape[1] - len(vlm.encode_text("wug")) - 1
    assert nb.token_ids[0, -1].item() == vlm.tokenizer.token_to_id("<answer>")  # generation starts after the marker
    with pytest.raises(ValueError, match="loss_on"):
        vlm.assemble_episodes([ep], with_answer=True, loss_on="everything")


def test_padding_sides_and_masks(vlm):
    short = make_episode("binding", 1, seed=0, index=0)
    long = make_episode("binding", 4, seed=0, index=0)
    for side in ("left", "right"):
        b = vlm.assemble_episodes([short, long], with_answer=False, padding_side=side)
        single = vlm.assemble_episodes([short], with_answer=False)
        n = single.token_ids.shape[1]
        T = b.token_ids.shape[1]
        real = slice(T - n, T) if side == "left" else slice(0, n)
        pad = slice(0, T - n) if side == "left" else slice(n, T)
        assert b.attention_mask[0, real].eq(1).all() and b.attention_mask[0, pad].eq(0).all()
        assert b.token_ids[0, pad].eq(vlm.pad_token_id).all()
        assert torch.equal(b.token_ids[0, real], single.token_ids[0])
        torch.testing.assert_close(b.inputs_embeds[0, real], single.inputs_embeds[0])
        # padding does not change what the model computes at the real positions
        with torch.no_grad():
            lp = vlm.forward(b)[0, real]
            ls = vlm.forward(single)[0]
        torch.testing.assert_close(lp, ls, rtol=1e-4, atol=1e-4)


def test_context_overflow_is_a_clear_error(vlm):
    ep = make_episode("shapes-caption", 40, seed=0, index=0, pool_size=40)
    with pytest.raises(ValueError, match="context holds"):
        vlm.assemble_episodes([ep], with_answer=True)


def test_decoder_layers_through_model_accessors(vlm):
    layers = vlm.decoder_layers()
    assert len(layers) == vlm.text_config.num_hidden_layers
    assert vlm.attention(0) is layers[0].self_attn and vlm.mlp(1) is layers[1].mlp
    # the layers are the ones the LM really runs: a hook on the last MLP sees the forward
    seen = []
    h = vlm.mlp(len(layers) - 1).register_forward_hook(lambda m, i, o: seen.append(o.shape))
    try:
        with torch.no_grad():
            vlm.forward(vlm.assemble_episodes([_episode()], with_answer=False))
    finally:
        h.remove()
    assert len(seen) == 1 and seen[0][-1] == vlm.hidden_size


def test_save_load_bit_exact(vlm, saved):
    loaded = TeachingVLM.load(saved)
    a, b = vlm.model.state_dict(), loaded.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    batch_a = vlm.assemble_episodes([_episode()], with_answer=True)
    batch_b = loaded.assemble_episodes([_episode()], with_answer=True)
    with torch.no_grad():
        assert torch.equal(vlm.forward(batch_a), loaded.forward(batch_b))
    assert loaded.tokenizer.to_str() == vlm.tokenizer.to_str()
    assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in saved.iterdir())


def test_missing_checkpoint_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrain-teaching"):
        TeachingVLM.load(tmp_path)


@pytest.mark.parametrize("quant", ["8bit", "4bit"])
def test_quantised_loading(vlm, saved, quant):
    import bitsandbytes as bnb

    q = TeachingVLM.load(saved, quant=quant)
    qcls = bnb.nn.Linear8bitLt if quant == "8bit" else bnb.nn.Linear4bit
    lm_linears = [m for n, m in q.language_model.named_modules() if isinstance(m, nn.Linear) and "lm_head" not in n]
    assert lm_linears and all(isinstance(m, qcls) for m in lm_linears)
    for part in (q.model.vision_model, q.model.qformer, q.model.language_projection):
        assert not any(isinstance(m, qcls) for m in part.modules())
    assert not isinstance(q.language_model.get_output_embeddings(), qcls)
    # independent reference: the fp32 model with each quantised weight replaced by its dequantised value
    ref_model = copy.deepcopy(vlm)
    ref_mods = dict(ref_model.language_model.named_modules())
    for name, m in q.language_model.named_modules():
        if isinstance(m, qcls):
            if quant == "4bit":
                w = bnb.functional.dequantize_4bit(m.weight.data, m.weight.quant_state)
            else:
                w = m.weight.data.float() * m.weight.SCB.float()[:, None] / 127.0
            ref_mods[name].weight.data.copy_(w.float())
    ep = _episode()
    with torch.no_grad():
        fp32 = vlm.forward(vlm.assemble_episodes([ep], with_answer=True))
        ref = ref_model.forward(ref_model.assemble_episodes([ep], with_answer=True))
        got = q.forward(q.assemble_episodes([ep], with_answer=True)).float()
    if quant == "4bit":  # nf4 weights: the dequantised fp32 model, up to the kernel's compute rounding
        assert (got - ref).abs().max().item() < 0.03 * ref.std().item()
    else:  # LLM.int8 also quantises activations row-wise: close, not equal
        assert (got - ref).abs().max().item() < 0.1 * ref.std().item()
    assert not torch.equal(ref, fp32)  # the weights really were quantised
    assert isinstance(q.generate([ep], max_new_tokens=3)[0], str)


def test_memory_by_dtype_counts_bytes_by_dtype():
    from mmict_core.backbones.quant import memory_by_dtype

    m = nn.Sequential(nn.Linear(3, 4), nn.Embedding(10, 2).half(), nn.BatchNorm1d(5))
    # hand count: Linear (4*3 + 4) fp32, BatchNorm weight/bias/running mean/var 4 * 5 fp32; Embedding 20 fp16;
    # BatchNorm's num_batches_tracked: one int64
    assert memory_by_dtype(m) == {torch.float32: (16 + 20) * 4, torch.float16: 20 * 2, torch.int64: 8}
    shared = nn.Linear(2, 2)
    assert memory_by_dtype(nn.Sequential(shared, shared)) == {torch.float32: 6 * 4}  # a shared layer counted once


@pytest.mark.parametrize("quant", ["none", "8bit", "4bit"])
def test_memory_by_dtype_sums_to_transformers_footprint(saved, quant):
    from mmict_core.backbones.quant import memory_by_dtype

    q = TeachingVLM.load(saved, quant=quant)
    by = memory_by_dtype(q.model)
    assert sum(by.values()) == q.model.get_memory_footprint()
    expected = {"none": torch.float32, "8bit": torch.int8, "4bit": torch.uint8}[quant]  # the LM linears' storage
    assert expected in by
