"""Random-weight VLMs of the real classes at the published 7-8 B sizes, built straight onto a device in
4-bit (bitsandbytes nf4) -- for ``benchmarks/gpu.sh`` (no downloads: the sizes are written here by hand).

:data:`SHAPES` holds the sizes of Idefics2-8B and LLaVA-Interleave-Qwen-7B as their published
``config.json`` files give them (values we are not sure of are marked) and a ``tiny`` scale of each
(the same classes and layout at toy sizes, for the CPU run and the tests).  The tokenizer is the
project's tiny word tokenizer (:func:`mmict_core.backbones.tiny.tiny_tokenizer`): its ids all lie below
the published vocabulary, so embeddings and ``lm_head`` have their real size while the prompts are the
ShapesWorld ones.

:func:`build_4bit` never holds the fp16 model: it builds the model on the meta device, replaces every
linear of the decoder layers by a ``bitsandbytes.nn.Linear4bit`` whose random fp16 weight is drawn on the
device and quantised at once (layer by layer, so an 8 B model needs ~1 GB of fp16 scratch, never 16 GB,
and no host RAM), then materialises the rest (vision tower, connector, embeddings, norms, lm_head, rotary
buffers) on the device in ``dtype`` through the model's own ``_init_weights``.  What stays in full
precision is what :mod:`mmict_core.backbones.quant` keeps there: vision tower, connector, lm_head.
"""
from __future__ import annotations

import copy
import re

import torch
from torch import nn

INIT_STD = 0.02  # the configs' initializer_range

# Published config.json values (HuggingFaceM4/idefics2-8b; llava-hf/llava-interleave-qwen-7b-hf).
IDEFICS2_8B = dict(
    kind="idefics2", published="HuggingFaceM4/idefics2-8b (Mistral-7B-v0.1 + SigLIP-so400m + perceiver)",
    text=dict(model_type="mistral", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
              num_key_value_heads=8, intermediate_size=14336, vocab_size=32003, rope_theta=10000.0,
              max_position_embeddings=32768,
              sliding_window=None),  # published 4096: no difference at the <= 4k contexts measured here
    vision=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                image_size=980, patch_size=14),  # image_size 980: the processor's longest edge (4,900 patches)
    perceiver=dict(resampler_n_latents=64, resampler_depth=3, resampler_n_heads=16, resampler_head_dim=96,
                   num_key_value_heads=4),  # 64 image tokens per image
    image_tokens=64,
)
LLAVA_INTERLEAVE_7B = dict(
    kind="llava", published="llava-hf/llava-interleave-qwen-7b-hf (Qwen1.5-7B + SigLIP-so400m, 729 tokens/image)",
    text=dict(model_type="qwen2", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
              num_key_value_heads=32, intermediate_size=11008,
              vocab_size=151646,  # unsure: 151646 = tokenizer length; the -hf config may pad it (152000, +0.3 %)
              rope_theta=1000000.0, max_position_embeddings=32768),
    vision=dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
                num_hidden_layers=26,  # unsure: 26 (SigLIP-so400m's 27 minus the unused last layer) or 27
                num_attention_heads=16, image_size=384, patch_size=14, vision_use_head=False),
    llava=dict(vision_feature_layer=-1, vision_feature_select_strategy="full",  # "full": all 27 x 27 = 729 patches
               projector_hidden_act="gelu", image_seq_length=729),
    image_tokens=729,
)
INSTRUCTBLIP_VICUNA_7B = dict(
    kind="instructblip", published="Salesforce/instructblip-vicuna-7b (Vicuna-7B v1.1 + EVA-ViT-g + Q-Former, 32 query tokens)",
    text=dict(model_type="llama", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
              num_key_value_heads=32, intermediate_size=11008, vocab_size=32001, rope_theta=10000.0,
              max_position_embeddings=2048),  # published 2048 (Vicuna v1.1); default RoPE does not read it
    vision=dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16,
                image_size=224, patch_size=14),
    qformer=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 cross_attention_frequency=2, max_position_embeddings=512),
    num_query_tokens=32,
    image_tokens=32,
)
QWEN2_VL_7B = dict(
    kind="qwen2_vl", published="Qwen/Qwen2-VL-7B-Instruct (Qwen2-7B text model + 675 M ViT, M-RoPE)",
    text=dict(model_type="qwen2_vl_text", hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
              num_key_value_heads=4, intermediate_size=18944, vocab_size=152064, max_position_embeddings=32768,
              rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}),
    vision=dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4, patch_size=14, spatial_merge_size=2,
                temporal_patch_size=2, in_channels=3),  # hidden_size (the merger's output) = the text width
    # unsure: image tokens vary with the image size in Qwen2-VL; the project's adapter resizes every image to
    # 12 x 12 merged patches (336 px) = 144 tokens (Qwen2VLBackbone.tokens_per_side)
    image_tokens=144,
)
SHAPES = {"idefics2-8b": IDEFICS2_8B, "llava-interleave-qwen-7b": LLAVA_INTERLEAVE_7B,
          "instructblip-vicuna-7b": INSTRUCTBLIP_VICUNA_7B, "qwen2-vl-7b": QWEN2_VL_7B}
QKV_BIAS = ("qwen2", "qwen2_vl_text")  # text model types whose q/k/v projections have a bias

# the tiny scale: same classes and layout, toy sizes (vocab: the tiny tokenizer's, padded)
_TINY_TEXT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                  max_position_embeddings=8192)
_TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=16,
                    patch_size=4)
TINY_OVERRIDES = {
    "idefics2-8b": dict(text=dict(_TINY_TEXT, num_key_value_heads=2), vision=_TINY_VISION,
                        perceiver=dict(resampler_n_latents=4, resampler_depth=1, resampler_n_heads=2,
                                       resampler_head_dim=16, num_key_value_heads=1), image_tokens=4),
    "llava-interleave-qwen-7b": dict(text=dict(_TINY_TEXT, num_key_value_heads=4), vision=_TINY_VISION,
                                     llava=dict(LLAVA_INTERLEAVE_7B["llava"], image_seq_length=16), image_tokens=16),
    "instructblip-vicuna-7b": dict(text=dict(_TINY_TEXT, num_key_value_heads=4), vision=_TINY_VISION,
                                   qformer=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                intermediate_size=64, cross_attention_frequency=2,
                                                max_position_embeddings=64), num_query_tokens=4, image_tokens=4),
    "qwen2-vl-7b": dict(text=dict(_TINY_TEXT, num_key_value_heads=2, rope_parameters={
                            "rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 2, 2]}),
                        vision=dict(depth=2, embed_dim=32, num_heads=4, mlp_ratio=2, patch_size=4), image_size=16,
                        image_tokens=4),  # 16 px / (patch 4 x merge 2) = 2 x 2 tokens
}
SCALES = ("full", "tiny")

# The CPU scaling rule (``scaled``): the decoder narrows to ``hidden`` keeping the published head size
# (heads = hidden / head_dim), the published query / key-value head ratio and MLP ratio; it is as deep as
# needed to reach the target parameter count.  The vocabulary, RoPE settings and image tokens per image stay
# real; the vision side is replaced by a small tower (2 layers, width 128) that keeps the patch grid which
# sets the image-token count (the connector -- perceiver, Q-Former query tokens, projector, merger -- keeps
# its published token count; the Q-Former narrows to 256 x 2 layers).
SMALL_VISION = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4)
SMALL_OVERRIDES = {
    "idefics2-8b": dict(vision=dict(SMALL_VISION, image_size=224, patch_size=14)),  # perceiver: 64 latents
    "llava-interleave-qwen-7b": dict(vision=dict(SMALL_VISION, image_size=384, patch_size=14)),  # 27 x 27 = 729
    "instructblip-vicuna-7b": dict(vision=dict(SMALL_VISION, image_size=224, patch_size=14),
                                   qformer=dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                                                intermediate_size=1024, cross_attention_frequency=2,
                                                max_position_embeddings=512)),  # 32 query tokens kept
    "qwen2-vl-7b": dict(vision=dict(depth=2, embed_dim=128, num_heads=4, mlp_ratio=4, patch_size=14,
                                    spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
                        image_size=336),  # 336 px / (14 x 2) = 12 x 12 = 144 tokens
}


def lm_formula(text: dict) -> int:
    """Parameters of the decoder (embeddings, layers, final norm) from its config sizes: per layer
    q, k, v, o projections (+ q/k/v biases for the Qwen2 text models), gate/up/down MLP and two RMSNorms."""
    h, L, H, I, V = (text[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                       "intermediate_size", "vocab_size"))
    kv, hd = text.get("num_key_value_heads", H), h // H
    attn = h * H * hd + 2 * h * kv * hd + H * hd * h + ((H + 2 * kv) * hd if text["model_type"] in QKV_BIAS else 0)
    return V * h + L * (attn + 3 * h * I + 2 * h) + h


def scaled(name: str, hidden: int, target: float | None = None, layers: int | None = None, tok=None) -> dict:
    """The shape ``name`` scaled down by the CPU rule above: decoder width ``hidden``, and ``layers`` deep or
    (``target``) the fewest layers whose decoder (:func:`lm_formula`: embeddings + layers) has >= ``target``
    parameters.  ``tok``: checked against the vocabulary."""
    s = shape(name, "full", tok)
    t = s["text"]
    head_dim = t["hidden_size"] // t["num_attention_heads"]
    group = t["num_attention_heads"] // t.get("num_key_value_heads", t["num_attention_heads"])
    if hidden % (head_dim * group):
        raise ValueError(f"{name}: hidden {hidden} must be a multiple of head_dim x query heads per key-value head "
                         f"= {head_dim * group}")
    heads = hidden // head_dim
    inter = round(t["intermediate_size"] * hidden / t["hidden_size"] / 64) * 64  # MLP ratio kept, multiple of 64
    t.update(hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=heads // group, intermediate_size=inter)
    if (layers is None) == (target is None):
        raise ValueError("give exactly one of layers and target")
    if layers is None:
        t["num_hidden_layers"] = 1
        one = lm_formula(t)
        t["num_hidden_layers"] = 0
        per_layer = one - lm_formula(t)
        layers = max(1, -(-(int(target) - lm_formula(t)) // per_layer))  # ceil
    t["num_hidden_layers"] = int(layers)
    over = copy.deepcopy(SMALL_OVERRIDES[name])
    s["vision"] = over.pop("vision")
    s.update(over)
    s["scale"] = f"{hidden}x{layers}"
    return s


def shape(name: str, scale: str = "full", tok=None) -> dict:
    """The shape ``name`` (a key of :data:`SHAPES`) at ``scale`` ('full' or 'tiny'); the tiny text vocab is the
    tokenizer's length rounded up to a multiple of 64."""
    if name not in SHAPES:
        raise ValueError(f"unknown model shape {name!r}; choose one of {', '.join(SHAPES)}")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    s = copy.deepcopy(SHAPES[name])
    s["scale"] = scale
    if scale == "tiny":
        over = copy.deepcopy(TINY_OVERRIDES[name])
        s["text"].update(over.pop("text"))
        s["vision"].update(over.pop("vision"))
        n = len(tok) if tok is not None else 0
        s["text"]["vocab_size"] = n + (-n % 64) if n else 320
        s.update(over)
    return s


def make_config(sh: dict, tok):
    """The transformers config of shape ``sh`` with the tiny tokenizer's special ids."""
    import transformers as tf

    from mmict_core.backbones.tokenizer import IMAGE

    if len(tok) > sh["text"]["vocab_size"]:
        raise ValueError(f"the tokenizer has {len(tok)} tokens, more than the vocabulary {sh['text']['vocab_size']}")
    text = dict(sh["text"], rms_norm_eps=1e-5, initializer_range=INIT_STD, pad_token_id=tok.pad_token_id,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    img = tok.convert_tokens_to_ids(IMAGE)
    if sh["kind"] == "idefics2":
        perceiver = dict(sh["perceiver"], hidden_size=text["hidden_size"], rms_norm_eps=1e-5)
        return tf.Idefics2Config(vision_config=dict(sh["vision"]), perceiver_config=perceiver, text_config=text,
                                 image_token_id=img, tie_word_embeddings=False)
    if sh["kind"] == "instructblip":
        qformer = dict(sh["qformer"], vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                       encoder_hidden_size=sh["vision"]["hidden_size"])
        return tf.InstructBlipConfig(vision_config=dict(sh["vision"]), qformer_config=qformer, text_config=text,
                                     num_query_tokens=sh["num_query_tokens"], image_token_index=img)
    if sh["kind"] == "qwen2_vl":
        ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}
        vision = dict(sh["vision"], hidden_size=text["hidden_size"])  # the merger's output: the text width
        return tf.Qwen2VLConfig(vision_config=vision, text_config=text, image_token_id=img,
                                video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                                vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    if sh["kind"] == "llava":
        vision = dict(sh["vision"])
        vision.setdefault("model_type", "siglip_vision_model")
        return tf.LlavaConfig(vision_config=vision, text_config=text, image_token_index=img, **sh["llava"],
                              tie_word_embeddings=False)
    raise ValueError(f"no config builder for kind {sh['kind']!r}")


def meta_model(config) -> nn.Module:
    """The model of ``config`` on the meta device (shapes only, nothing allocated)."""
    from mmict_core.backbones.loading import model_class_for

    with torch.device("meta"):
        return model_class_for(config)(config)


def count_parameters(model: nn.Module) -> int:
    """Parameters as the unquantised model has them (a 4-bit weight counts in_features x out_features)."""
    import bitsandbytes as bnb

    n = 0
    for mod in model.modules():
        for name, p in mod.named_parameters(recurse=False):
            if isinstance(mod, bnb.nn.Linear4bit) and name == "weight":
                n += mod.in_features * mod.out_features
            else:
                n += p.numel()
    return n


def _linear4bit(lin: nn.Linear, device, dtype, gen: torch.Generator):
    """A Linear4bit (nf4, double quant, compute ``dtype``) with a fresh N(0, 0.02^2) weight drawn in
    ``dtype`` on ``device`` and quantised there; bias zeros."""
    import bitsandbytes as bnb

    q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None, compute_dtype=dtype,
                          compress_statistics=True, quant_type="nf4", device="meta")
    w = torch.empty(lin.out_features, lin.in_features, device=device, dtype=dtype).normal_(0.0, INIT_STD, generator=gen)
    q.weight = bnb.nn.Params4bit(w, requires_grad=False, compress_statistics=True, quant_type="nf4",
                                 module=q)._quantize(device)  # (out, in) fp16 -> packed uint8 + quant state
    del w
    if lin.bias is not None:
        q.bias = nn.Parameter(torch.zeros(lin.out_features, device=device, dtype=dtype), requires_grad=False)
    return q


def quantise_decoder(model: nn.Module, device, dtype, seed: int = 0) -> int:
    """Replace every nn.Linear inside the decoder layers (``get_decoder().layers``) by a random 4-bit one,
    one layer at a time; returns how many were replaced."""
    gen = torch.Generator(device=device).manual_seed(seed)
    dec = model.get_decoder()
    if not hasattr(dec, "layers"):  # InstructBLIP: get_decoder() is the *ForCausalLM (as VLMBackbone.decoder())
        dec = dec.get_decoder()
    layers = dec.layers
    n = 0
    for layer in layers:
        for name, mod in list(layer.named_modules()):
            if type(mod) is nn.Linear:
                parent_name, _, attr = name.rpartition(".")
                setattr(layer.get_submodule(parent_name) if parent_name else layer, attr,
                        _linear4bit(mod, device, dtype, gen))
                n += 1
    return n


def _owned_modules(model: nn.Module):
    """(module, the innermost ``PreTrainedModel`` holding it) for every module: each sub-model (vision
    tower, decoder) initialises its own modules with its own ``_init_weights``, as ``initialize_weights`` does."""
    from transformers import PreTrainedModel

    def walk(mod, owner):
        owner = mod if isinstance(mod, PreTrainedModel) else owner
        yield mod, owner
        for child in mod.children():
            yield from walk(child, owner)

    yield from walk(model, model)


def materialise(model: nn.Module, device, dtype, seed: int = 0) -> int:
    """Give every tensor still on the meta device storage on ``device`` (floating point in ``dtype``) and
    initialise its module through its sub-model's own ``_init_weights``; returns the modules touched."""
    torch.manual_seed(seed)
    touched = 0
    for mod, owner in _owned_modules(model):
        meta = False
        for name, p in list(mod.named_parameters(recurse=False)):
            if p.is_meta:
                dt = dtype if p.is_floating_point() else p.dtype
                mod._parameters[name] = nn.Parameter(torch.empty(p.shape, device=device, dtype=dt),
                                                     requires_grad=False)
                meta = True
        for name, b in list(mod.named_buffers(recurse=False)):
            if b.is_meta:
                # buffers (rotary inv_freq, position ids) keep their own dtype: _init_weights recomputes them
                mod._buffers[name] = torch.empty(b.shape, device=device, dtype=b.dtype)
                meta = True
        if meta:
            owner._init_weights(mod)
            touched += 1
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise RuntimeError(f"tensors left on the meta device: {leftover[:5]}")
    return touched


def _reduced_config(config, tok):
    """``config`` one layer deep and narrow where no buffer depends on it (MLP widths, vocabulary), same
    head sizes, rotary settings and image / patch sizes: the buffers of its model equal the full model's."""
    small = copy.deepcopy(config)
    text, vision = small.get_text_config(), small.vision_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    text.head_dim = head_dim  # one head of the same size: the rotary buffers keep their shape and values
    text.hidden_size, text.num_attention_heads, text.num_key_value_heads = head_dim, 1, 1
    text.num_hidden_layers, text.intermediate_size = 1, 64
    text.vocab_size = len(tok) + (-len(tok) % 64)
    # the vision tower's buffers (position ids) depend on image and patch size only
    if hasattr(vision, "depth"):  # Qwen2-VL: the vision rotary buffer depends on embed_dim / num_heads: kept
        vision.depth = 1
    else:
        vision.num_hidden_layers, vision.intermediate_size, vision.hidden_size, vision.num_attention_heads = 1, 64, 32, 1
    if getattr(small, "qformer_config", None) is not None:  # its position ids depend on max_position_embeddings only
        q = small.qformer_config
        q.num_hidden_layers, q.hidden_size, q.num_attention_heads, q.intermediate_size = 1, 32, 1, 64
        q.encoder_hidden_size = vision.hidden_size
    if getattr(small, "perceiver_config", None) is not None:
        small.perceiver_config.resampler_depth = 1
        small.perceiver_config.hidden_size = head_dim
    return small


def reference_buffers(config, tok) -> dict[str, torch.Tensor]:
    """Every buffer (rotary ``inv_freq``, position ids, ...) as the class's own constructor computes it, from an
    eager CPU build of :func:`_reduced_config`; per-layer names are given as layer 0's."""
    from mmict_core.backbones.loading import model_class_for

    small = model_class_for(config)(_reduced_config(config, tok))
    return {re.sub(r"\.layers\.\d+\.", ".layers.0.", n): b for n, b in small.named_buffers()}


def copy_buffers(model: nn.Module, reference: dict[str, torch.Tensor]) -> int:
    """Overwrite each buffer of ``model`` with its ``reference`` (same name, layer 0's for per-layer ones);
    ValueError for a buffer without one or of another shape.  Returns how many were copied."""
    n = 0
    for name, b in model.named_buffers():
        ref = reference.get(re.sub(r"\.layers\.\d+\.", ".layers.0.", name))
        if ref is None or ref.shape != b.shape:
            raise ValueError(f"no reference for buffer {name} {tuple(b.shape)}")
        with torch.no_grad():
            b.copy_(ref.to(b.dtype))
        n += 1
    return n


def build_4bit(name: str, scale: str = "full", device: str | torch.device = "cuda", dtype: torch.dtype = torch.float16,
               seed: int = 0, sh: dict | None = None):
    """(backbone adapter of the real class, shape dict): the random-weight ``name`` model at ``scale`` (or of the
    shape dict ``sh``, e.g. from :func:`scaled`), its decoder linears in nf4 4-bit, the rest in ``dtype`` -- all
    built on ``device``."""
    from mmict_core.backbones.loading import adapter_for
    from mmict_core.backbones.quant import keep_4bit_trainable
    from mmict_core.backbones.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    sh = shape(name, scale, tok) if sh is None else sh
    config = make_config(sh, tok)
    device = torch.device(device)
    model = meta_model(config)
    quantise_decoder(model, device, dtype, seed)
    materialise(model, device, dtype, seed)
    copy_buffers(model, reference_buffers(config, tok))  # not left to _init_weights (whose coverage varies by version)
    if getattr(model, "query_tokens", None) is not None:  # InstructBLIP: zero-initialised query tokens would all be equal
        with torch.no_grad():
            model.query_tokens.normal_(0.0, INIT_STD)
    model.requires_grad_(False)
    keep_4bit_trainable(model)
    adapter = adapter_for(config)
    bb = adapter(model.eval(), tok, adapter.default_image_processor(config), image_size=sh.get("image_size"),
                 name=f"random {name} ({sh.get('scale', scale)}, nf4)", quant="4bit")
    return bb, sh
