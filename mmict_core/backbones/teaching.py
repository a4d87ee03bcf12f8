"""The teaching VLM: transformers' InstructBLIP classes at tiny sizes.

vision encoder (ViT, 32x32 px, 4x4 patches) -> Q-Former that also reads the instruction ->
linear projection -> Llama-style decoder, with a word-level tokenizer shared by the Q-Former and
the LM.  The same classes hold real InstructBLIP checkpoints, so every code path that works here
works there.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import InstructBlipConfig, InstructBlipForConditionalGeneration

from .. import paths
from ..data import check_image_array, vocabulary
from .base import VLMBackbone
from .quant import keep_4bit_trainable, quantization_config
from .tokenizer import ANSWER, BOS, EOS, IMAGE, PAD, SEP, build_word_tokenizer

ASSETS_DIR = paths.ASSETS_DIR  # the default teaching VLM (the shipped one, or $MMICT_TEACHING_DIR)
META_FILE = "teaching.json"


def teaching_config(vocab_size: int, *, image_size: int = 32, patch_size: int = 4, vision_hidden: int = 64,
                    vision_layers: int = 2, vision_intermediate: int | None = None, qformer_hidden: int = 64, qformer_layers: int = 2,
                    num_query_tokens: int = 8, lm_hidden: int = 128, lm_layers: int = 4, lm_heads: int = 4,
                    lm_intermediate: int = 256, image_token_id: int = 4, pad_token_id: int = 0,
                    bos_token_id: int = 2, eos_token_id: int = 3) -> InstructBlipConfig:
    """Config of the teaching VLM (about 1M parameters)."""
    return InstructBlipConfig(
        vision_config=dict(image_size=image_size, patch_size=patch_size, hidden_size=vision_hidden,
                           intermediate_size=vision_intermediate or vision_hidden * 2, num_hidden_layers=vision_layers,
                           num_attention_heads=4, initializer_range=0.02),
        qformer_config=dict(vocab_size=vocab_size, hidden_size=qformer_hidden, num_hidden_layers=qformer_layers,
                            num_attention_heads=4, intermediate_size=qformer_hidden * 2, cross_attention_frequency=1,
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=64,
                            pad_token_id=pad_token_id),
        text_config=dict(model_type="llama", vocab_size=vocab_size, hidden_size=lm_hidden,
                         intermediate_size=lm_intermediate, num_hidden_layers=lm_layers, num_attention_heads=lm_heads,
                         num_key_value_heads=lm_heads, max_position_embeddings=1024, pad_token_id=pad_token_id,
                         bos_token_id=bos_token_id, eos_token_id=eos_token_id, tie_word_embeddings=True,
                         rms_norm_eps=1e-5),
        num_query_tokens=num_query_tokens,
        image_token_index=image_token_id,
    )


class InstructBlipBackbone(VLMBackbone):
    """A VLM built from ``InstructBlipForConditionalGeneration`` (teaching VLM or real checkpoints)."""

    def __init__(self, model: InstructBlipForConditionalGeneration, tokenizer: Tokenizer, *, image_size: int,
                 name: str = "instructblip", quant: str = "none", answer_marker: bool = True):
        self.model = model.eval()
        model.requires_grad_(False)  # frozen: methods train their own parameters (pretraining unfreezes)
        keep_4bit_trainable(model)  # adapters must get gradients through 4-bit layers
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.name = name
        self.quant = quant
        self.pad_token_id = tokenizer.token_to_id(PAD)
        self.bos_token_id = tokenizer.token_to_id(BOS)
        self.eos_token_id = tokenizer.token_to_id(EOS)
        self.image_token_id = tokenizer.token_to_id(IMAGE)
        self.sep_token_id = tokenizer.token_to_id(SEP)
        marker = tokenizer.token_to_id(ANSWER)
        # `answer_marker`: False puts each answer right after its image tokens (no marker between)
        self.answer_marker_ids = [marker] if marker is not None and answer_marker else []
        self.num_query_tokens = int(model.config.num_query_tokens)

    # text
    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def unknown_words(self, text: str) -> list[str]:
        enc = self.tokenizer.encode(text, add_special_tokens=False)
        unk = self.tokenizer.token_to_id("[UNK]")
        return [text[s:e] for i, (s, e) in zip(enc.ids, enc.offsets) if i == unk]

    # images
    def pixel_values(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 (H, W, 3) images -> normalised (N, 3, S, S) floats in [-1, 1]."""
        from PIL import Image

        out = []
        for im in images:
            arr = check_image_array(im)
            if arr.shape[0] != self.image_size or arr.shape[1] != self.image_size:
                arr = np.asarray(Image.fromarray(arr).resize((self.image_size, self.image_size), Image.BILINEAR))
            out.append(torch.from_numpy(arr.copy()).permute(2, 0, 1))
        x = torch.stack(out).float().div(255.0).sub(0.5).div(0.5)
        dtype = self.model.vision_model.embeddings.patch_embedding.weight.dtype
        return x.to(self.device, dtype)

    def qformer_text(self, texts: Sequence[str], max_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Q-Former input ids and mask for ``texts``, right-padded.  (N, L), (N, L)"""
        max_len = max_len or self.model.config.qformer_config.max_position_embeddings
        ids = [self.encode_text(t)[:max_len] for t in texts]
        L = max(1, max(len(i) for i in ids))
        t = torch.full((len(ids), L), self.pad_token_id, dtype=torch.long)
        m = torch.zeros((len(ids), L), dtype=torch.long)
        for r, i in enumerate(ids):
            t[r, : len(i)] = torch.tensor(i, dtype=torch.long)
            m[r, : len(i)] = 1
        return t.to(self.device), m.to(self.device)

    def vision_states(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Vision encoder output (CLS + patches).  (N, 1 + n_patches, d_vision)"""
        return self.model.vision_model(pixel_values=self.pixel_values(images)).last_hidden_state

    @torch.no_grad()
    def retrieval_embedding(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Mean-pooled vision-encoder states, for similarity (RICES-style) selection.  (N, d_vision)"""
        return self.vision_states(images).mean(1).float().cpu().numpy()

    def qformer_states(self, images: Sequence[np.ndarray] | torch.Tensor, texts: Sequence[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The Q-Former run over ``[query tokens ; text]`` for each image (the M-Hub).

        Returns (states (N, Q + L, d_q), text mask (N, L)); ``states[:, :Q]`` are the query-token
        outputs, ``states[:, Q:]`` the text-token outputs.  ``images`` may be precomputed vision
        states.
        """
        vis = images if isinstance(images, torch.Tensor) else self.vision_states(images)
        n = vis.shape[0]
        q = self.model.query_tokens.expand(n, -1, -1)  # (N, Q, d_q)
        if texts is None:
            ids = torch.zeros((n, 0), dtype=torch.long, device=self.device)
            tmask = torch.zeros((n, 0), dtype=torch.long, device=self.device)
        else:
            if len(texts) != n:
                raise ValueError(f"{n} images but {len(texts)} texts")
            ids, tmask = self.qformer_text(texts)
        qmask = torch.ones(q.shape[:2], dtype=torch.long, device=self.device)
        out = self.model.qformer(
            input_ids=ids if ids.shape[1] else None, attention_mask=torch.cat([qmask, tmask], 1), query_embeds=q,
            encoder_hidden_states=vis, encoder_attention_mask=torch.ones(vis.shape[:2], dtype=torch.long, device=self.device),
        )
        return out.last_hidden_state, tmask

    def encode_images(self, images: Sequence[np.ndarray], instructions: Sequence[str] | None = None) -> torch.Tensor:
        states, _ = self.qformer_states(images, instructions)
        query_out = states[:, : self.num_query_tokens]  # (N, Q, d_q)
        return self.model.language_projection(query_out)  # (N, Q, d_lm)


class TeachingVLM(InstructBlipBackbone):
    """The project's own small VLM (default everywhere)."""

    @classmethod
    def create(cls, seed: int = 0, **sizes) -> "TeachingVLM":
        """A freshly initialised teaching VLM (random weights, deterministic by ``seed``)."""
        tok = build_word_tokenizer(vocabulary())
        ids = {k: tok.token_to_id(t) for k, t in
               dict(pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, image_token_id=IMAGE).items()}
        config = teaching_config(tok.get_vocab_size(), **ids, **sizes)
        torch.manual_seed(seed)
        model = InstructBlipForConditionalGeneration(config)
        # transformers zero-initialises the query tokens (real checkpoints overwrite them); from
        # scratch that makes every query identical, and only RoPE in the LM slowly breaks the
        # symmetry.  Initialise them as BLIP-2 does: N(0, 0.02).
        with torch.no_grad():
            model.query_tokens.normal_(0.0, config.qformer_config.initializer_range)
        return cls(model, tok, image_size=config.vision_config.image_size, name="teaching-vlm")

    def save(self, path: str | os.PathLike, metadata: dict | None = None) -> None:
        """Write safetensors weights, config.json, tokenizer.json and teaching.json to ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save(str(path / "tokenizer.json"))
        meta = {"image_size": self.image_size, "name": self.name, "answer_marker": bool(self.answer_marker_ids),
                **(metadata or {})}
        (path / META_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, quant: str = "none", device: str = "cpu") -> "TeachingVLM":
        """Load the teaching VLM (the shipped one by default), in fp32 or bitsandbytes 8-bit / 4-bit."""
        path = Path(path) if path is not None else ASSETS_DIR
        for f in ("config.json", "model.safetensors", "tokenizer.json", META_FILE):
            if not (path / f).is_file():
                raise FileNotFoundError(
                    f"{path} is not a teaching-VLM folder: {f} is missing. Run `mmict pretrain-teaching --out {path}` "
                    f"to build one, or pass the folder that holds it."
                )
        meta = json.loads((path / META_FILE).read_text())
        qcfg = quantization_config(quant)
        kwargs = dict(dtype=torch.float32)
        if qcfg is not None:
            kwargs.update(quantization_config=qcfg, device_map={"": device})
            # bitsandbytes' CPU int8 matmul logs "inputs will be cast" on every call (harmless): silence it
            logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
        model = InstructBlipForConditionalGeneration.from_pretrained(path, **kwargs)
        if qcfg is None:
            model = model.to(device)
        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        return cls(model, tok, image_size=meta["image_size"], name=meta.get("name", "teaching-vlm"), quant=quant,
                   answer_marker=meta.get("answer_marker", True))
