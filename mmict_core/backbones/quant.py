"""bitsandbytes quantisation settings (LLM.int8 and nf4), CPU or GPU.

Only the language model's linear layers are quantised by default: the vision tower, the Q-Former,
the projection and the lm_head stay in full precision (transformers drops its default lm_head skip
as soon as a skip list is given, so the list names it explicitly).
"""
from __future__ import annotations

import logging
import sys

import torch

QUANT_MODES = ("none", "8bit", "4bit")
_FULL_PRECISION = ["vision_model", "qformer", "language_projection", "query_tokens",
                   "vision_tower", "multi_modal_projector", "visual", "connector", "perceiver"]
# transformers 5.x matches a skip name from the *start* of a module's full name (or as its suffix);
# LLaVA / Idefics / Qwen-VL keep their vision tower and connector under ``model.``, so both spellings
DEFAULT_SKIP = _FULL_PRECISION + [f"model.{n}" for n in _FULL_PRECISION] + ["lm_head"]


def quantization_config(quant: str, skip_modules: list[str] | None = None, compute_dtype: torch.dtype | None = None):
    """A ``BitsAndBytesConfig`` for ``quant`` ('8bit', '4bit'), or None for 'none'."""
    if quant not in QUANT_MODES:
        raise ValueError(f"unknown quantisation {quant!r}; use one of {', '.join(QUANT_MODES)}")
    if quant == "none":
        return None
    from transformers import BitsAndBytesConfig

    skip = list(DEFAULT_SKIP if skip_modules is None else skip_modules)
    if quant == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    if compute_dtype is None:
        compute_dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype, llm_int8_skip_modules=skip)


def keep_4bit_trainable(model) -> None:
    """Switch off bitsandbytes' in-place CPU repack of 4-bit weights (AVX512-BF16 hosts).

    ``Linear4bit.forward`` repacks its weight for a CPU kernel (``gemv_4bit``) the first time it runs
    in eval mode on an input without grad (any no-grad inference or teacher pass).  That kernel has
    no backward, so every adapter trained afterwards silently loses the gradient through the layer
    (ecosystem.md 1.4).  Costs some 4-bit CPU inference speed; no effect on GPUs or without AVX512-BF16.
    """
    for m in model.modules():
        if hasattr(m, "support_avx512bf16_for_cpu"):
            m.support_avx512bf16_for_cpu = False


# bitsandbytes' CPU backend, at import on AVX512-BF16 hosts, tries to fetch a 4-bit matmul kernel from
# the Hugging Face hub ("kernels-community", remote code) and logs "Failed to load CPU gemm_4bit_forward
# ... trust_remote_code ..." when it cannot (offline, or untrusted publisher); bitsandbytes then uses
# its built-in 4-bit path.  The kernel serves 4-bit inference only.
_BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"


def import_bitsandbytes_quietly() -> bool:
    """Import bitsandbytes (if installed) without its remote-kernel warning; for code that uses no
    4-bit weights (e.g. peft, which imports bitsandbytes for its 8/4-bit LoRA layers).  A 4-bit
    load imports it through transformers first and keeps the warning.  True when it is importable."""
    if "bitsandbytes" in sys.modules:
        return True
    log = logging.getLogger(_BNB_CPU_LOGGER)
    old = log.level
    log.setLevel(logging.ERROR)
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    finally:
        log.setLevel(old)
    return True


def memory_by_dtype(module: torch.nn.Module) -> dict[torch.dtype, int]:
    """Bytes of ``module``'s parameters and buffers, by dtype (each tensor counted once, shared ones
    too): ``numel * element_size``.  Over a transformers model the values sum to its
    ``get_memory_footprint()``; a 4-bit layer's packed weight shows as uint8 (two weights a byte)."""
    out: dict[torch.dtype, int] = {}
    for t in list(module.parameters()) + list(module.buffers()):
        out[t.dtype] = out.get(t.dtype, 0) + t.numel() * t.element_size()
    return out
