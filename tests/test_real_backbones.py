"""Real transformers VLM classes behind the VLMBackbone interface, at tiny random sizes.

The matrix {InstructBLIP, LLaVA, Idefics2, Idefics3, Qwen2-VL, Qwen2.5-VL} x {fp32, 8-bit, 4-bit}
x {icl, hificl, mimic, live, m2iv, lora} (+ MMICT, VanillaFT, VanillaICT on InstructBLIP): finite forward, attach/detach
bit-identical, one training step with gradients on the adapter only, generation.  Plus loading
(folder round trip, dispatch, quantised modules, fail-fast missing checkpoints, Flan-T5 refused),
Qwen's M-RoPE positions against the model's own, cached greedy decoding against recomputation,
and a 4-bit HiFICL run whose loss goes down.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from torch import nn

from mmict_core.backbones import MissingCheckpointError, load_backbone
from mmict_core.backbones.base import Segment
from mmict_core.backbones.instructblip import InstructBlipHFBackbone
from mmict_core.backbones.loading import ADAPTERS, MODEL_CLASSES, adapter_for
from mmict_core.backbones.tiny import TINY_KINDS, save_tiny, tiny_backbone, tiny_config
from mmict_core.data import make_episode
from mmict_core.methods import create_method, get_method, method_names
from mmict_core.train import TrainConfig, train

QUANTS = ("none", "8bit", "4bit")
METHODS = {n: get_method(n).tiny_config for n in method_names()}  # every registered method, its small config


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    """get(kind, quant): each tiny backbone built once per module; quantised ones load from one saved
    fp32 folder per kind (as real quantised checkpoints load)."""
    folders, cache = {}, {}

    def get(kind: str, quant: str = "none"):
        if (kind, quant) not in cache:
            if quant == "none":
                cache[kind, quant] = tiny_backbone(kind)
            else:
                if kind not in folders:
                    folders[kind] = save_tiny(kind, tmp_path_factory.mktemp(kind.replace(".", "")))
                cache[kind, quant] = tiny_backbone(kind, quant, folder=folders[kind])
        return cache[kind, quant]

    get.folder = lambda kind: folders[kind] if kind in folders else folders.setdefault(
        kind, save_tiny(kind, tmp_path_factory.mktemp(kind.replace(".", ""))))
    return get


def episodes(k: int = 2, n: int = 2):
    return [make_episode("shapes-vqa", k, seed=0, index=i, split="train") for i in range(n)]


def make(name: str, bb):
    return create_method(name, bb, **METHODS.get(name, {}))


def check_method(m, bb, eps):
    """attach/detach bit-identical, finite forward, one step: finite loss, grads on the adapter only, generation."""
    batch = m.batch(eps, with_answer=True)
    with torch.no_grad():  # an inference pass first (the 4-bit CPU repack trap)
        before = bb.forward(batch)
        with m.attached():
            during = bb.forward(batch)
        after = bb.forward(batch)
    assert torch.isfinite(before).all() and torch.isfinite(during).all()
    assert torch.equal(before, after)
    m.train()
    loss, parts = m.loss(eps)
    assert math.isfinite(loss.item()), parts
    params = list(m.named_parameters())
    if params:
        loss.backward()
        for name, p in params:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert any(p.grad.abs().sum() > 0 for _, p in params)
    assert all(p.grad is None for p in bb.model.parameters())
    m.eval()
    out = m.generate(eps, max_new_tokens=3)
    assert len(out) == len(eps) and all(isinstance(s, str) for s in out)
    with torch.no_grad():
        assert torch.equal(before, bb.forward(batch))  # still untouched after training and generation


# -- the matrix ------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("quant", QUANTS)
@pytest.mark.parametrize("kind", TINY_KINDS)
def test_method_on_backbone(backbones, kind, quant, method):
    bb = backbones(kind, quant)
    try:
        m = make(method, bb)
    except TypeError as exc:  # e.g. the M-Hub methods need a Q-Former that reads text (InstructBLIP only)
        pytest.skip(f"{method} does not run on {kind}: {exc}")
    check_method(m, bb, episodes(k=3))


# -- the adapters ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", TINY_KINDS)
def test_adapter_basics(backbones, kind):
    bb = backbones(kind)
    assert bb.answer_marker_ids == [] and type(bb) is ADAPTERS[bb.model.config.model_type]
    assert type(bb.model).__name__ == MODEL_CLASSES[bb.model.config.model_type]
    tc = bb.text_config
    assert tc.num_key_value_heads < tc.num_attention_heads  # grouped-query attention in every tiny LM
    assert bb.decoder().config is tc  # what the attention methods swap is what the decoder reads
    # every image gives the same number of LM tokens, whatever its size
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(32, 32, 3), (20, 48, 3), (16, 16, 3)]]
    with torch.no_grad():
        feats = bb.encode_images(imgs, ["a", "b", "c"])
    assert feats.shape == (3, bb.num_image_tokens, bb.hidden_size) and torch.isfinite(feats).all()
    ids = bb.encode_text("what colour is the shape ?")
    assert bb.decode(ids) == "what colour is the shape ?"


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_attention_methods_leave_the_vision_path_alone(backbones, kind):
    """HiFICL / MimIC swap the *text* config's attention function: image tokens are unchanged while attached."""
    bb = backbones(kind)
    imgs = [ex.images[0] for ex in episodes(k=1, n=1)[0].demos]
    with torch.no_grad():
        ref = bb.encode_images(imgs, ["what"])
        for name in ("hificl", "mimic"):
            with make(name, bb).attached():
                assert torch.equal(bb.encode_images(imgs, ["what"]), ref), name


def test_tiny_backbones_are_deterministic_by_seed():
    assert tiny_backbone("llava", seed=0).fingerprint() == tiny_backbone("llava", seed=0).fingerprint()
    assert tiny_backbone("llava", seed=0).fingerprint() != tiny_backbone("llava", seed=1).fingerprint()


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_loaded_folder_equals_in_memory(backbones, kind):
    """save_pretrained -> load_backbone(folder): same weights, tokenizer, image processor, logits."""
    bb = backbones(kind)
    loaded = load_backbone(str(backbones.folder(kind)), device_map="cpu")
    assert type(loaded) is type(bb) and loaded.image_size == bb.image_size
    assert loaded.fingerprint() == bb.fingerprint()
    eps = episodes()
    with torch.no_grad():
        a = bb.forward(bb.assemble_episodes(eps, with_answer=True))
        b = loaded.forward(loaded.assemble_episodes(eps, with_answer=True))
    assert torch.equal(a, b)


@pytest.mark.parametrize("quant", ["8bit", "4bit"])
@pytest.mark.parametrize("kind", TINY_KINDS)
def test_only_decoder_linears_are_quantised(backbones, kind, quant):
    import bitsandbytes as bnb

    bb = backbones(kind, quant)
    qcls = bnb.nn.Linear8bitLt if quant == "8bit" else bnb.nn.Linear4bit
    in_decoder = {id(m) for m in bb.decoder_layers().modules()}
    quantised = [n for n, m in bb.model.named_modules() if isinstance(m, qcls)]
    assert quantised and all(id(bb.model.get_submodule(n)) in in_decoder for n in quantised), quantised
    n_linear = sum(isinstance(m, nn.Linear) for m in bb.decoder_layers().modules())
    assert len(quantised) == n_linear  # every decoder linear, nothing else (vision, connector, lm_head stay)
    assert bb.model.get_output_embeddings().weight.is_floating_point()
    assert bb.fingerprint() == backbones(kind).fingerprint()  # adapters move between fp32 / 8-bit / 4-bit loads


def test_adapter_trained_on_fp32_loads_on_4bit(backbones, tmp_path):
    from mmict_core.methods.hificl import HiFICL

    m = make("hificl", backbones("qwen2.5-vl"))
    m.save(tmp_path / "a")
    q = HiFICL.load(tmp_path / "a", backbones("qwen2.5-vl", "4bit"))
    assert all(torch.equal(v, q.state_dict()[k]) for k, v in m.state_dict().items())


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_cached_greedy_decoding_matches_recomputation(backbones, kind):
    """Tokens generated with the KV cache and incremental positions = argmax of a full forward over
    the prompt + those tokens (left padding, rows of different lengths)."""
    bb = backbones(kind)
    eps = episodes(k=1)
    n = 3
    batch = bb.assemble_episodes(eps, with_answer=False, padding_side="left")
    assert len({len(s) for s in [batch.positions(b, "prompt") for b in range(2)]}) == 2  # padded
    gen = bb.generate_ids(batch, max_new_tokens=n)
    seqs = [bb.episode_segments(ep, with_answer=False) + [Segment("answer", ep.k, ids=torch.tensor(g))]
            for ep, g in zip(eps, gen)]
    full = bb.assemble(seqs, padding_side="left")
    with torch.no_grad():
        pred = bb.forward(full)[:, -n - 1:-1].argmax(-1)
    for row, g in zip(pred.tolist(), gen):
        stop = g.index(bb.eos_token_id) + 1 if bb.eos_token_id in g else n
        assert row[:stop] == g[:stop]


@pytest.mark.parametrize("kind", ["qwen2-vl", "qwen2.5-vl"])
def test_qwen_mrope_positions_match_the_models_rope_index(backbones, kind):
    """One image per item: the adapter's 3-D positions = the model's get_rope_index from input ids,
    mm_token_type_ids and image_grid_thw, at every real position, left or right padded."""
    bb = backbones(kind)
    eps = episodes(k=2)
    for side in ("left", "right"):
        batch = bb.assemble_episodes(eps, with_answer=True, padding_side=side)
        n_images = sum(ep.k + 1 for ep in eps)
        ref, _ = bb.model.model.get_rope_index(batch.token_ids, mm_token_type_ids=bb.mm_token_type_ids(batch),
                                               image_grid_thw=bb.image_grid_thw(n_images),
                                               attention_mask=batch.attention_mask)
        real = batch.attention_mask.bool()
        ours = bb.position_ids(batch)
        assert ours.shape == ref.shape
        assert torch.equal(ours[:, real], ref[:, real])


def test_qwen_two_images_in_one_item_get_one_grid_each(backbones):
    bb = backbones("qwen2-vl")
    ep = episodes(k=0, n=1)[0]
    ep.query.images = ep.query.images * 2
    batch = bb.assemble_episodes([ep], with_answer=True)
    pos = bb.position_ids(batch)[:, 0]  # (3, T)
    img = batch.positions(0, "image")
    g, n_tok = bb.grid, bb.num_image_tokens
    first, second = pos[:, img[:n_tok]], pos[:, img[n_tok:]]
    assert torch.equal(second, first + g)  # the second image starts after the first one's grid
    after = img[-1] + 1
    assert (pos[:, after] == pos[:, img].max() + 1).all()


def test_beam_search_refused_on_qwen_but_works_on_llava(backbones):
    eps = episodes(k=1)
    with pytest.raises(ValueError, match="beam search"):
        backbones("qwen2-vl").generate(eps, max_new_tokens=2, num_beams=2)
    out = backbones("llava").generate(eps, max_new_tokens=2, num_beams=2)
    assert len(out) == 2 and all(isinstance(s, str) for s in out)


# -- loading: fail fast, clear refusals ------------------------------------------------------------
def test_missing_local_folder_fails_fast(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(MissingCheckpointError, match="huggingface-cli download"):
        load_backbone(str(tmp_path / "no-such-checkpoint"))
    with pytest.raises(MissingCheckpointError, match="config.json"):
        load_backbone(str(tmp_path))  # a folder without a checkpoint
    assert time.monotonic() - t0 < 20  # a hang guard, not a benchmark


def test_missing_hub_id_fails_fast_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    t0 = time.monotonic()
    with pytest.raises(MissingCheckpointError) as info:
        load_backbone("mmict-test/no-such-vlm", quant="4bit")
    assert time.monotonic() - t0 < 20
    msg = str(info.value)
    assert "not on this machine" in msg and "huggingface-cli download mmict-test/no-such-vlm --local-dir" in msg


def test_flan_t5_instructblip_is_refused(tmp_path):
    from transformers import InstructBlipConfig

    cfg = tiny_config("instructblip")
    t5 = InstructBlipConfig(vision_config=cfg.vision_config.to_dict(), qformer_config=cfg.qformer_config.to_dict(),
                            text_config=dict(model_type="t5", vocab_size=256, d_model=32, d_kv=8, d_ff=64,
                                             num_layers=1, num_heads=4))
    t5.save_pretrained(tmp_path)  # config only: the refusal comes before any weight is read
    with pytest.raises(ValueError, match="encoder-decoder.*not supported"):
        load_backbone(str(tmp_path))
    with pytest.raises(ValueError, match="Flan-T5"):
        InstructBlipHFBackbone.check_config(t5)


def test_custom_code_needs_trust_remote_code(tmp_path):
    cfg = '{"model_type": "mystery_vlm", "auto_map": {"AutoConfig": "cfg.MysteryConfig"}}'
    (tmp_path / "config.json").write_text(cfg)
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        load_backbone(str(tmp_path))


def test_unsupported_class_is_refused(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no backbone adapter for model_type 'llama'"):
        load_backbone(str(tmp_path))


def test_dispatch_is_by_model_type():
    for kind in TINY_KINDS:
        cfg = tiny_config(kind)
        assert adapter_for(cfg).kind == kind


# -- training on a 4-bit backbone ------------------------------------------------------------------
def test_4bit_hificl_training_lowers_the_loss(backbones):
    bb = backbones("llava", "4bit")
    m = make("hificl", bb)
    res = train(m, TrainConfig(task="shapes-vqa", steps=20, batch_size=2, samples=2, lr=3e-2, warmup_ratio=0.0),
                progress=False)
    first, last = np.mean(res.losses[:3]), np.mean(res.losses[-3:])
    assert all(math.isfinite(x) for x in res.losses) and last < first, res.losses


@pytest.mark.parametrize("kind", ["llava", "qwen2-vl"])
def test_similarity_selection_on_real_classes(backbones, kind):
    """RICES-style selection works on every backbone: the embedding is the mean of each image's
    LM-space tokens (checked against encode_images directly), and a copy of the query's image in the
    pool is the most similar demonstration (shown last, next to the query)."""
    import numpy as np

    from mmict_core import workbench as wb
    from mmict_core.data import Example

    bb = backbones(kind)
    pool, query = wb.task_pool("shapes-vqa", 6)
    emb = bb.retrieval_embedding([query.images[0], pool[0].images[0]])
    with torch.no_grad():
        ref = bb.encode_images([query.images[0]]).float().mean(dim=(0, 1)).numpy()
    assert emb.shape == (2, bb.hidden_size) and np.allclose(emb[0], ref, atol=1e-6)
    twin = Example(images=list(query.images), prompt=query.prompt, answers=list(query.answers))
    pool = pool[:3] + [twin] + pool[3:]
    assert wb.auto_select("similarity", pool, query, 2, backbone=bb)[-1] == 3


def video_episodes(n_frames: int = 3, k: int = 1, n: int = 2):
    """Episodes whose items are 'videos': each item's frames are n_frames ShapesWorld renders."""
    from mmict_core.data import Episode, Example

    out = []
    for i in range(n):
        base = episodes(k=k, n=n)[i]

        def clip(ex, shift):
            frames = [np.roll(ex.images[0], shift * f, axis=1) for f in range(n_frames)]  # a moving scene
            return Example(images=frames, prompt=ex.prompt, answers=list(ex.answers), task="video")

        out.append(Episode(demos=[clip(d, 1) for d in base.demos], query=clip(base.query, 2), task="video"))
    return out


@pytest.mark.parametrize("method", list(METHODS))
def test_video_items_flow_through_every_method(backbones, method):
    """Multi-frame items: several images per item for the LM-side methods (each frame's tokens in
    order), frames concatenated in the Q-Former's cross-attention memory for MMICT (its video path)."""
    bb = backbones("instructblip" if method in ("mmict", "vanilla-ft", "vanilla-ict") else "llava")
    eps = video_episodes(k=3)  # the vector methods read at least 3 demonstrations
    batch = bb.assemble_episodes(eps, with_answer=False)
    n_tok = bb.encode_images([eps[0].query.images[0]]).shape[1]
    assert len(batch.positions(0, "image", item=1)) == 3 * n_tok  # the query's three frames
    check_method(make(method, bb), bb, eps)
