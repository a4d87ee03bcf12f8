"""Tiny random-weight versions of the real VLM classes, for tests (no downloads, deterministic by seed).

Each is the real ``*ForConditionalGeneration`` class at toy sizes: a 2-layer LM (hidden 64, 4 query
heads, 2 key/value heads: grouped-query attention), a 2-layer vision tower on 16 x 16 px images
(4 px patches) and the class's own connector.  The vocabulary is the word-level tokenizer of the
ShapesWorld tasks (``build_word_tokenizer``) plus the special tokens the classes name, wrapped as a
transformers fast tokenizer and padded to a multiple of 64.

``tiny_backbone(kind, quant)``: fp32 is built in memory; 8-bit / 4-bit are built in fp32, written
with ``save_pretrained`` (weights, tokenizer, image processor) and loaded back through
:func:`~mmict_core.backbones.loading.load_hf_backbone` with a ``BitsAndBytesConfig`` -- exactly how a
real quantised checkpoint is loaded.  Sizes are bitsandbytes-friendly (every quantised weight has a
multiple of 64 elements).

Size overrides (benchmarks): ``lm_hidden``, ``lm_layers``, ``lm_heads``, ``lm_kv_heads`` (default: half the
query heads, as the toy size), ``lm_intermediate`` scale the decoder of any kind; the connector follows the
LM width (Qwen2-VL's merger output, Idefics2's perceiver) and Qwen's M-RoPE sections scale with the head
size.  Without them every config is exactly the toy one above.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

from ..data import vocabulary
from .hf import HFBackbone
from .tokenizer import BOS, EOS, IMAGE, PAD, SEP, UNK, build_word_tokenizer

TINY_KINDS = ("instructblip", "llava", "idefics2", "idefics3", "qwen2-vl", "qwen2.5-vl")
TINY_IMAGE_SIZE = 16
META_FILE = "mmict_backbone.json"  # optional per-folder settings (image_size, name)
EXTRA_SPECIAL = ["<fake_token_around_image>", "<global-img>", "<end_of_utterance>", "<|vision_start|>",
                 "<|vision_end|>", "<|video_pad|>"]


def tiny_tokenizer():
    """The ShapesWorld word-level tokenizer as a transformers fast tokenizer (vocab: multiple of 64)."""
    from transformers import PreTrainedTokenizerFast

    words = list(vocabulary()) + EXTRA_SPECIAL
    n = len(set(words)) + 7  # + the 7 SPECIAL_TOKENS of build_word_tokenizer
    words += [f"<extra_{i}>" for i in range(-n % 64)]
    tok = build_word_tokenizer(words)
    tok.add_special_tokens(EXTRA_SPECIAL)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
                                   additional_special_tokens=[IMAGE, SEP])


LM_SIZE_KEYS = ("lm_hidden", "lm_layers", "lm_heads", "lm_kv_heads", "lm_intermediate")


def lm_sizes(lm_hidden: int | None = None, lm_layers: int | None = None, lm_heads: int | None = None,
             lm_kv_heads: int | None = None, lm_intermediate: int | None = None) -> dict:
    """The decoder's sizes as transformers names them: the toy ones (hidden 64, 2 layers, GQA with 4
    query / 2 key-value heads, head_dim 16, intermediate 128) with any of the overrides applied."""
    heads = lm_heads or 4
    kv = lm_kv_heads or max(1, heads // 2)
    hidden = lm_hidden or 64
    if hidden % heads or heads % kv:
        raise ValueError(f"lm_hidden {hidden} must be a multiple of lm_heads {heads}, and lm_heads of lm_kv_heads {kv}")
    return dict(hidden_size=hidden, intermediate_size=lm_intermediate or 128, num_hidden_layers=lm_layers or 2,
                num_attention_heads=heads, num_key_value_heads=kv)


def _lm(tok, sizes: dict | None = None, **extra) -> dict:
    """The tiny decoder's config (``sizes``: from :func:`lm_sizes`; the toy sizes by default)."""
    return dict(vocab_size=len(tok), **(sizes or lm_sizes()), max_position_embeddings=512, rms_norm_eps=1e-5,
                pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **extra)


def _mrope_section(head_dim: int) -> list[int]:
    """Qwen's M-RoPE split of head_dim / 2 rotary pairs (temporal, height, width): [4, 2, 2] at the toy
    head_dim 16, scaled in proportion for larger heads."""
    if head_dim % 8:
        raise ValueError(f"Qwen2-VL tiny configs need a head size divisible by 8, got {head_dim}")
    return [head_dim // 4, head_dim // 8, head_dim // 8]


def _vision(**extra) -> dict:
    return dict(image_size=TINY_IMAGE_SIZE, patch_size=4, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, **extra)


def tiny_config(kind: str, tok=None, **lm_overrides):
    """The config of the tiny ``kind`` model (its vocabulary from ``tok``); ``lm_overrides``: the
    :func:`lm_sizes` keywords (``lm_hidden``, ``lm_layers``, ``lm_heads``, ``lm_kv_heads``, ``lm_intermediate``)."""
    import transformers as tf

    unknown = set(lm_overrides) - set(LM_SIZE_KEYS)
    if unknown:
        raise TypeError(f"unknown LM size override(s) {sorted(unknown)}; choose from {', '.join(LM_SIZE_KEYS)}")
    sizes = lm_sizes(**lm_overrides)
    width = sizes["hidden_size"]
    tok = tok or tiny_tokenizer()
    img = tok.convert_tokens_to_ids(IMAGE)
    ids = {t: tok.convert_tokens_to_ids(t) for t in EXTRA_SPECIAL}
    if kind == "instructblip":
        return tf.InstructBlipConfig(
            vision_config=_vision(), num_query_tokens=4, image_token_index=img,
            qformer_config=dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, cross_attention_frequency=1, max_position_embeddings=64,
                                pad_token_id=tok.pad_token_id),
            text_config=dict(model_type="llama", **_lm(tok, sizes)))
    if kind == "llava":
        return tf.LlavaConfig(vision_config=dict(model_type="clip_vision_model", **_vision()),
                              text_config=dict(model_type="llama", **_lm(tok, sizes)), image_token_index=img,
                              image_seq_length=(TINY_IMAGE_SIZE // 4) ** 2)
    if kind == "idefics2":
        return tf.Idefics2Config(
            vision_config=_vision(), image_token_id=img,
            perceiver_config=dict(hidden_size=width, rms_norm_eps=1e-5, resampler_n_latents=4, resampler_depth=1,
                                  resampler_n_heads=2, resampler_head_dim=16, num_key_value_heads=1),
            text_config=dict(model_type="mistral", sliding_window=None, **_lm(tok, sizes)))
    if kind == "idefics3":
        return tf.Idefics3Config(vision_config=_vision(), text_config=dict(model_type="llama", **_lm(tok, sizes)),
                                 image_token_id=img, scale_factor=2)
    if kind in ("qwen2-vl", "qwen2.5-vl"):
        mrope = _mrope_section(width // sizes["num_attention_heads"])
        text = _lm(tok, sizes, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope})
        common = dict(text_config=text, image_token_id=img, video_token_id=ids["<|video_pad|>"],
                      vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
        patches = dict(patch_size=4, spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
        if kind == "qwen2-vl":
            return tf.Qwen2VLConfig(vision_config=dict(depth=2, embed_dim=32, hidden_size=width, num_heads=4, mlp_ratio=2,
                                                       **patches), **common)
        return tf.Qwen2_5_VLConfig(vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4,
                                                      out_hidden_size=width, window_size=16, fullatt_block_indexes=[1],
                                                      **patches), **common)
    raise ValueError(f"unknown tiny backbone {kind!r}; choose one of {', '.join(TINY_KINDS)}")


def tiny_name(kind: str, **lm_overrides) -> str:
    """'tiny-llava'; with size overrides 'tiny-llava-1024x12' (hidden x layers)."""
    if not any(v is not None for v in lm_overrides.values()):
        return f"tiny-{kind}"
    s = lm_sizes(**lm_overrides)
    return f"tiny-{kind}-{s['hidden_size']}x{s['num_hidden_layers']}"


def tiny_parts(kind: str, seed: int = 0, **lm_overrides):
    """(fp32 model with random weights, tokenizer, image processor, adapter class) of the tiny ``kind``
    (``lm_overrides``: see :func:`tiny_config`)."""
    from .loading import adapter_for, model_class_for

    tok = tiny_tokenizer()
    config = tiny_config(kind, tok, **lm_overrides)
    adapter = adapter_for(config)
    torch.manual_seed(seed)
    model = model_class_for(config)(config)
    if kind == "instructblip":  # zero-initialised query tokens would all be equal (as in TeachingVLM.create)
        with torch.no_grad():
            model.query_tokens.normal_(0.0, 0.02)
    return model.eval(), tok, adapter.default_image_processor(config), adapter


def save_tiny(kind: str, folder: str | Path, seed: int = 0, **lm_overrides) -> Path:
    """Write the tiny ``kind`` model as a checkpoint folder (weights, config, tokenizer, image processor);
    ``lm_overrides``: see :func:`tiny_config`."""
    folder = Path(folder)
    model, tok, proc, _ = tiny_parts(kind, seed, **lm_overrides)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    proc.save_pretrained(folder)
    if kind == "instructblip":  # the Q-Former shares the word vocabulary here
        tok.save_pretrained(folder / "qformer_tokenizer")
    del model
    (folder / META_FILE).write_text(json.dumps({"image_size": TINY_IMAGE_SIZE, "name": tiny_name(kind, **lm_overrides)},
                                               indent=2))
    return folder


def tiny_backbone(kind: str, quant: str = "none", seed: int = 0, folder: str | Path | None = None,
                  **lm_overrides) -> HFBackbone:
    """A tiny ``kind`` backbone: in memory for fp32; through a saved folder for 8-bit / 4-bit (``folder``:
    where to keep that checkpoint for reuse -- a folder that already holds one is loaded as it is, whatever
    the overrides; a temporary folder otherwise).  ``lm_overrides``: see :func:`tiny_config`."""
    from .loading import load_hf_backbone

    if quant == "none" and folder is None:
        model, tok, proc, adapter = tiny_parts(kind, seed, **lm_overrides)
        extra = {"qformer_tokenizer": tok} if kind == "instructblip" else {}
        return adapter(model, tok, proc, image_size=TINY_IMAGE_SIZE, name=tiny_name(kind, **lm_overrides), quant="none",
                       **extra)
    tmp = None
    if folder is None:
        folder = tmp = tempfile.mkdtemp(prefix=f"mmict-tiny-{kind}-")
    try:
        if not (Path(folder) / "config.json").is_file():
            save_tiny(kind, folder, seed, **lm_overrides)
        return load_hf_backbone(folder, quant=quant)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
