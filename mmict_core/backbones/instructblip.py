"""Real InstructBLIP checkpoints (``InstructBlipForConditionalGeneration`` with a decoder-only LM:
Vicuna / Llama).  The Q-Former reads the instruction with its own (BERT) tokenizer, which
checkpoints keep in the ``qformer_tokenizer`` sub-folder; the M-Hub methods (MMICT) work as on the
teaching VLM.  Flan-T5 checkpoints (an encoder-decoder LM) are refused: every method here feeds
one decoder-only input sequence.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from .hf import HFBackbone, image_processor_class
from .teaching import InstructBlipBackbone


class InstructBlipHFBackbone(HFBackbone, InstructBlipBackbone):
    kind = "instructblip"
    model_types = ("instructblip",)

    def __init__(self, model, tokenizer, image_processor, *, qformer_tokenizer=None, **kwargs):
        super().__init__(model, tokenizer, image_processor, **kwargs)
        self.qformer_tokenizer = qformer_tokenizer if qformer_tokenizer is not None else tokenizer
        self.num_query_tokens = int(model.config.num_query_tokens)

    @classmethod
    def check_config(cls, config) -> None:
        tc = config.get_text_config() if hasattr(config, "get_text_config") else config.text_config
        if getattr(tc, "is_encoder_decoder", False) or tc.model_type in ("t5", "mt5", "umt5"):
            raise ValueError(
                f"this InstructBLIP checkpoint has an encoder-decoder language model ({tc.model_type}, e.g. Flan-T5), "
                f"which is not supported: every method here feeds one decoder-only sequence of interleaved "
                f"demonstrations. Use a Vicuna/Llama InstructBLIP checkpoint (e.g. Salesforce/instructblip-vicuna-7b).")

    @classmethod
    def default_image_processor(cls, config):
        s = int(config.vision_config.image_size)
        cls_ = image_processor_class("BlipImageProcessor")
        return cls_(size={"height": s, "width": s}, image_mean=[0.5] * 3, image_std=[0.5] * 3)

    def default_image_size(self) -> int:
        from .llava import square_side

        return square_side(self.image_processor, self.model.config.vision_config.image_size)

    @property
    def causal_lm(self) -> nn.Module:
        return self.model.language_model  # a *ForCausalLM here (with its lm_head)

    def pixel_values(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Images -> the processor's normalised (N, 3, S, S) pixels on the vision tower's device."""
        return self.processed(images)["pixel_values"]

    def qformer_text(self, texts: Sequence[str], max_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Q-Former input ids and mask of ``texts`` with the Q-Former's own tokenizer, right-padded.  (N, L) x 2"""
        max_len = max_len or self.model.config.qformer_config.max_position_embeddings
        tok = self.qformer_tokenizer
        ids = [list(tok(t)["input_ids"])[:max_len] for t in texts]  # with [CLS] ... [SEP], as the processor
        L = max(1, max(len(i) for i in ids))
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        t = torch.full((len(ids), L), pad, dtype=torch.long)
        m = torch.zeros((len(ids), L), dtype=torch.long)
        for r, i in enumerate(ids):
            t[r, : len(i)] = torch.tensor(i, dtype=torch.long)
            m[r, : len(i)] = 1
        return t.to(self.device), m.to(self.device)
