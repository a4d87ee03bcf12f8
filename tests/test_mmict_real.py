"""MMICT on InstructBLIP checkpoints laid out as the real ones are: the LM vocabulary has no <eoc>
separator (MMICT then learns one) and the Q-Former reads text with its own BERT WordPiece tokenizer
(``qformer_tokenizer/``), whose ids differ from the LM's.  Tiny random weights, fp32 and 4-bit:
one training step with gradients on the adapter only, attach/detach bit-identical, the learned
separator saved and loaded with the adapter, Q-Former tokens read with the Q-Former's tokenizer."""
from __future__ import annotations

import math

import pytest
import torch

from mmict_core.backbones.loading import load_hf_backbone
from mmict_core.backbones.tiny import save_tiny
from mmict_core.data import make_episode, vocabulary
from mmict_core.methods.mmict import MMICT, MMICTConfig, demo_text
from mmict_core.train import TrainConfig, train


def bert_tokenizer():
    """A BERT WordPiece tokenizer over the task words, in the reverse order of the LM's ids."""
    from transformers import BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(vocabulary()), reverse=True)
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = save_tiny("instructblip", tmp_path_factory.mktemp("tiny-instructblip"))
    bert_tokenizer().save_pretrained(folder / "qformer_tokenizer")
    return folder


def load(folder, quant):
    bb = load_hf_backbone(folder, quant=quant)
    bb.sep_token_id = None  # as for real InstructBLIP vocabularies: no <eoc> token
    return bb


def episodes(k=2, n=2):
    return [make_episode("shapes-vqa", k, seed=0, index=i, split="train") for i in range(n)]


@pytest.mark.parametrize("quant", ["none", "4bit"])
def test_mmict_learns_a_separator_and_trains_on_the_adapter_only(checkpoint, quant, tmp_path):
    bb = load(checkpoint, quant)
    m = MMICT(bb, MMICTConfig(shots=2, train_shots=2))
    table = bb.language_model.get_input_embeddings().weight
    assert m.sep_embedding.shape == (bb.hidden_size,) and m.sep_embedding.requires_grad
    torch.testing.assert_close(m.sep_embedding.detach(), table.float().mean(0))
    assert m.num_trainable() == m.expected_num_parameters()
    eps = episodes()
    plain = bb.assemble_episodes(eps, with_answer=True)
    with torch.no_grad():  # attach/detach leaves the backbone bit-identical
        before = bb.forward(plain)
        with m.attached():
            during = bb.forward(plain)
        after = bb.forward(plain)
    assert torch.isfinite(during).all() and torch.equal(before, after)
    batch = m.batch(eps, with_answer=True)  # every <eoc> position holds the learned embedding
    sep = [batch.inputs_embeds[b, p] for b in range(len(eps)) for p in batch.positions(b, "sep")]
    assert len(sep) == 2 * len(eps) and all(torch.equal(s, m.sep_embedding.to(s.dtype)) for s in sep)

    m.train()
    loss, _ = m.loss(eps)
    assert math.isfinite(loss.item())
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert m.sep_embedding.grad.abs().sum() > 0
    assert all(p.grad is None for p in bb.model.parameters())  # nothing of the backbone trains
    m.zero_grad(set_to_none=True)

    start = m.sep_embedding.detach().clone()
    res = train(m, TrainConfig(task="shapes-vqa", samples=4, steps=1, batch_size=2, lr=1e-2), progress=False)
    assert res.steps == 1 and math.isfinite(res.losses[0])
    assert not torch.equal(start, m.sep_embedding.detach())  # the separator is trained
    assert all(p.grad is None for p in bb.model.parameters())
    with torch.no_grad():
        assert torch.equal(before, bb.forward(plain))  # still bit-identical after a training step

    m.save(tmp_path / "adapter")  # the separator travels with the adapter
    loaded = MMICT.load(tmp_path / "adapter", bb)
    assert torch.equal(loaded.sep_embedding, m.sep_embedding)
    out = loaded.generate(eps, max_new_tokens=2)
    assert len(out) == 2 and all(isinstance(s, str) for s in out)


def test_hub_map_reads_qformer_ids_with_the_qformer_tokenizer(checkpoint):
    bb = load(checkpoint, "none")
    bert = bb.qformer_tokenizer
    assert type(bert).__name__.startswith("BertTokenizer")
    ep = episodes(k=2, n=1)[0]
    info = MMICT(bb).hub_map(ep)
    for d, demo in zip(info, ep.demos):
        text = demo_text(demo)
        ids = bert(text)["input_ids"]
        assert d["slice"] == "text" and d["tokens"] == bert.convert_ids_to_tokens(ids)
        assert d["tokens"][0] == "[CLS]" and d["tokens"][-1] == "[SEP]"
        assert d["tokens"][1:-1] == text.lower().split()  # the words themselves
        assert [bb.decode([i]) for i in ids[1:-1]] != d["tokens"][1:-1]  # the LM's vocabulary would misread them
    assert info[-1]["slice"] == "query"


def test_a_backbone_with_a_separator_token_keeps_using_it(checkpoint):
    bb = load_hf_backbone(checkpoint)  # the tiny vocabulary has <eoc>
    m = MMICT(bb)
    assert bb.sep_token_id is not None and m.sep_embedding is None
    assert "sep_embedding" not in m.state_dict()
    b = m.batch(episodes(k=1, n=1), with_answer=True)
    assert [int(b.token_ids[0, p]) for p in b.positions(0, "sep")] == [bb.sep_token_id]
