"""The shared part of the adapters that wrap real transformers VLM classes as a :class:`VLMBackbone`.

An adapter holds the ``*ForConditionalGeneration`` model, its tokenizer and its image processor.
What differs per class is small and lives in the class's own module (:mod:`.llava`,
:mod:`.idefics`, :mod:`.qwen_vl`, :mod:`.instructblip`): how images become LM-space tokens
(:meth:`encode_images`) and, for Qwen2-VL, the position ids.  Everything else is common:

- text: the checkpoint's tokenizer (``add_special_tokens=False``; the base class adds BOS/EOS);
- images: every image is resized to one fixed square ``image_size`` first and then handed to the
  checkpoint's own image processor, so every image gives the same number of tokens;
- running: the interleaved input is already embedded (:meth:`VLMBackbone.assemble`), so the model
  is called with ``inputs_embeds`` and no pixels -- the vision path is skipped and the call is
  the LM plus its ``lm_head``.  In transformers v5 ``model.language_model`` of LLaVA / Idefics /
  Qwen is the *base* decoder without ``lm_head``; :attr:`causal_lm` is the module that maps
  embeddings to logits (the top-level model for those classes, the language model for InstructBLIP);
- generation: a greedy loop with the model's KV cache and explicit position ids (the same ids the
  training forward uses, including Qwen2-VL's 3-D M-RoPE ids); beam search goes through
  ``generate()`` where positions are plain 1-D.

Layers are reached only through the model's accessors (``get_decoder()``, ``get_input_embeddings()``),
never through class- or name-specific paths.
"""
from __future__ import annotations

import inspect
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from ..data import check_image_array
from .base import AssembledBatch, VLMBackbone
from .quant import keep_4bit_trainable
from .tokenizer import SEP



def image_processor_class(name: str):
    """transformers' image-processor class ``name``; its PIL variant where torchvision is missing
    (what transformers would fall back to anyway, minus the warning)."""
    import transformers
    from transformers.utils import is_torchvision_available

    if not is_torchvision_available() and hasattr(transformers, name + "Pil"):
        return getattr(transformers, name + "Pil")
    return getattr(transformers, name)


class HFBackbone(VLMBackbone):
    """A real transformers VLM behind the :class:`VLMBackbone` interface (one subclass per class family)."""

    kind: ClassVar[str] = ""  # short name: 'llava', 'idefics3', 'qwen2-vl', ...
    model_types: ClassVar[tuple[str, ...]] = ()  # config.model_type values this adapter serves
    processor_kwargs: ClassVar[dict[str, Any]] = {}  # extra image-processor arguments (fixed-size output)

    def __init__(self, model: nn.Module, tokenizer, image_processor, *, image_size: int | None = None,
                 name: str = "", quant: str = "none"):
        self.model = model.eval()
        model.requires_grad_(False)  # frozen: methods train their own parameters
        keep_4bit_trainable(model)  # adapters must get gradients through 4-bit layers
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.name = name or self.kind
        self.quant = quant
        cfg = model.config
        tc = self.text_config
        self.image_token_id = int(self._config_image_token(cfg))
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tc.eos_token_id
        self.eos_token_id = int(eos[0] if isinstance(eos, (list, tuple)) else eos)
        self.bos_token_id = tokenizer.bos_token_id  # None for tokenizers without BOS (Qwen)
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else self.eos_token_id)
        vocab = tokenizer.get_vocab()
        self.sep_token_id = vocab.get(SEP)  # MMICT's demo separator, where the vocabulary has one
        self.answer_marker_ids = []  # real checkpoints: the answer follows the image tokens directly
        self.image_size = int(image_size or self.default_image_size())
        # the KV-cache argument: 'cache' from transformers 5.2x ('past_key_values' before)
        params = inspect.signature(self.causal_lm.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._last_only = {"logits_to_keep": 1} if "logits_to_keep" in params else {}  # prefill: last logits only
        self._n_image_tokens: int | None = None

    # -- configuration --------------------------------------------------------------------------
    @staticmethod
    def _config_image_token(cfg) -> int:
        for name in ("image_token_id", "image_token_index"):
            v = getattr(cfg, name, None)
            if v is not None:
                return v
        raise ValueError(f"{type(cfg).__name__} names no image token (image_token_id / image_token_index)")

    def default_image_size(self) -> int:
        """Square side every image is resized to (from the image processor, else the vision config)."""
        return int(self.model.config.vision_config.image_size)

    @classmethod
    def check_config(cls, config) -> None:
        """Raise a clear error for a configuration this adapter cannot run (before weights load)."""

    @classmethod
    def default_image_processor(cls, config):
        """The class's own image processor for a config without a saved one (tiny configs).  Every
        registered class family overrides it."""
        raise NotImplementedError(f"{cls.__name__} has no default image processor: load a checkpoint folder that "
                                  f"holds its preprocessor_config.json")

    @property
    def text_config(self):
        """The config the decoder reads at run time (its ``_attn_implementation`` is what methods swap)."""
        return self.decoder().config

    @property
    def language_model(self) -> nn.Module:
        """The base decoder (input embeddings, layers), through the model's ``get_decoder()``."""
        return self.decoder()

    @property
    def causal_lm(self) -> nn.Module:
        """The module mapping ``inputs_embeds`` to LM logits (the top-level model by default)."""
        return self.model

    @property
    def device(self) -> torch.device:
        """Where inputs go: the device of the LM's input embeddings (first shard with device_map='auto')."""
        return self.language_model.get_input_embeddings().weight.device

    # -- text -----------------------------------------------------------------------------------
    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True).strip()

    def unknown_words(self, text: str) -> list[str]:
        """Words the tokenizer maps to its unknown token (none for byte-level BPE)."""
        unk = self.tokenizer.unk_token_id
        if unk is None:
            return []
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [text[s:e] for i, (s, e) in zip(enc["input_ids"], enc["offset_mapping"]) if i == unk]

    # -- images ---------------------------------------------------------------------------------
    def resized(self, images: Sequence[np.ndarray]) -> list:
        """uint8 (H, W, 3) arrays -> PIL images of ``image_size`` x ``image_size``."""
        from PIL import Image

        out = []
        for im in images:
            pil = Image.fromarray(check_image_array(im))
            if pil.size != (self.image_size, self.image_size):
                pil = pil.resize((self.image_size, self.image_size), Image.BICUBIC)
            out.append(pil)
        return out

    def processed(self, images: Sequence[np.ndarray], **kwargs) -> dict[str, torch.Tensor]:
        """The image processor's tensors for ``images`` (pixel values moved to the model's device and dtype)."""
        out = self.image_processor(images=self.resized_for_processor(images), return_tensors="pt",
                                   **{**self.processor_kwargs, **kwargs})
        dev = self.model.device
        res = {}
        for k, v in out.items():
            if isinstance(v, torch.Tensor):
                v = v.to(dev, self.model.dtype) if v.is_floating_point() else v.to(dev)
            res[k] = v
        return res

    def resized_for_processor(self, images: Sequence[np.ndarray]):
        return self.resized(images)

    # -- running --------------------------------------------------------------------------------
    def position_ids(self, batch: AssembledBatch) -> torch.Tensor:
        """Position of every input position: consecutive over the real tokens.  (B, T)"""
        return (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)

    def next_positions(self, pos: torch.Tensor) -> torch.Tensor:
        """Position of the next generated token of each row, after ``pos``.  (B, 1)"""
        return pos.amax(-1, keepdim=True) + 1

    def forward(self, batch: AssembledBatch, **kwargs) -> torch.Tensor:
        """LM logits of an assembled batch.  (B, T, V)"""
        out = self.causal_lm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask,
                             position_ids=self.position_ids(batch), use_cache=False, **kwargs)
        return out.logits

    @torch.no_grad()
    def generate_from(self, batch: AssembledBatch, max_new_tokens: int = 10, num_beams: int = 1) -> list[str]:
        """Greedy continuation of a *left-padded* assembled batch with the KV cache, cut at EOS
        (beam search through ``generate()`` for classes with 1-D positions)."""
        if batch.attention_mask[:, -1].min() == 0:
            raise ValueError("generation needs a left-padded batch (assemble(..., padding_side='left'))")
        rows = self.generate_ids(batch, max_new_tokens) if num_beams == 1 else \
            self._beam_search(batch, max_new_tokens, num_beams)
        texts = []
        for row in rows:
            if self.eos_token_id in row:
                row = row[: row.index(self.eos_token_id)]
            texts.append(self.decode(row))
        return texts

    @torch.no_grad()
    def generate_ids(self, batch: AssembledBatch, max_new_tokens: int = 10) -> list[list[int]]:
        """Greedy token ids after each row of a left-padded batch (rows that hit EOS continue with EOS)."""
        lm = self.causal_lm
        mask, pos = batch.attention_mask, self.position_ids(batch)
        out = lm(inputs_embeds=batch.inputs_embeds, attention_mask=mask, position_ids=pos, use_cache=True,
                 **self._last_only)
        B = mask.shape[0]
        done = torch.zeros(B, dtype=torch.bool, device=mask.device)
        tokens: list[torch.Tensor] = []
        for step in range(max_new_tokens):
            nxt = out.logits[:, -1].argmax(-1)  # (B,)
            nxt = torch.where(done, torch.full_like(nxt, self.eos_token_id), nxt)
            tokens.append(nxt)
            done |= nxt == self.eos_token_id
            if done.all() or step == max_new_tokens - 1:
                break
            cache = out.get("cache", None)
            cache = out.get("past_key_values", None) if cache is None else cache
            pos = self.next_positions(pos)  # (B, 1) or (3, B, 1)
            mask = torch.cat([mask, mask.new_ones(B, 1)], 1)
            out = lm(inputs_embeds=self.embed_ids(nxt[:, None]), attention_mask=mask, position_ids=pos,
                     use_cache=True, **{self._cache_kw: cache})
        return torch.stack(tokens, 1).tolist() if tokens else [[] for _ in range(B)]

    def _beam_search(self, batch: AssembledBatch, max_new_tokens: int, num_beams: int) -> list[list[int]]:
        return self.causal_lm.generate(
            inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, max_new_tokens=max_new_tokens,
            num_beams=num_beams, do_sample=False, eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id,
        ).tolist()

    def describe(self) -> dict[str, Any]:
        """What was loaded (for logs and the app)."""
        tc = self.text_config
        return {"kind": self.kind, "class": type(self.model).__name__, "name": self.name, "quant": self.quant,
                "lm": tc.model_type, "layers": len(self.decoder_layers()), "hidden": tc.hidden_size,
                "heads": tc.num_attention_heads, "kv_heads": getattr(tc, "num_key_value_heads", None),
                "image_size": self.image_size, "image_tokens": self.num_image_tokens}
