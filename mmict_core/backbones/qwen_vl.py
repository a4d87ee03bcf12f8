"""Qwen2-VL and Qwen2.5-VL (``Qwen2VLForConditionalGeneration``, ``Qwen2_5_VLForConditionalGeneration``).

Images: the processor cuts an image into ``patch_size`` patches (``temporal_patch_size`` copies
of a still image), the vision tower merges ``spatial_merge_size``² neighbours into one LM token.
The grid would vary with the image's size, so every image is resized to one square
``image_size`` (a multiple of patch x merge; default 12 LM tokens per side = 144 tokens) and the
processor is told that exact pixel budget: every image gives (image_size / (patch·merge))² tokens.

Positions (M-RoPE): each position has three ids (temporal, height, width).  The interleaved
input is walked in order with a running position ``p``:

- a text position (and any embedding segment that is not an image) gets (p, p, p), then p += 1;
- an image block of g x g tokens (row-major, as the merger emits them) gets, for token (r, c),
  (p, p + r, p + c); then p += g.

This is what the model's own ``get_rope_index`` computes from ``input_ids``, ``mm_token_type_ids``
(0 text, 1 image) and ``image_grid_thw`` for one image per run of image tokens; building the ids
here, per image block, also places several consecutive images of one item correctly (the model's
version would take them for one image).  Generated tokens continue at max(position) + 1 in all
three ids.  Pad positions get 0 (they are masked).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .base import AssembledBatch
from .hf import HFBackbone, image_processor_class


class Qwen2VLBackbone(HFBackbone):
    kind = "qwen2-vl"
    model_types = ("qwen2_vl",)
    tokens_per_side = 12  # default image_size = 12 merged patches per side

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.image_size % self.unit:
            raise ValueError(f"image_size must be a multiple of patch_size x spatial_merge_size = {self.unit} px "
                             f"for {type(self.model).__name__}, got {self.image_size}")
        self.grid = self.image_size // self.unit  # LM tokens per side of an image

    @property
    def unit(self) -> int:
        vc = self.model.config.vision_config
        return int(vc.patch_size * vc.spatial_merge_size)

    def default_image_size(self) -> int:
        return self.unit * self.tokens_per_side

    @classmethod
    def default_image_processor(cls, config):
        vc = config.vision_config
        cls_ = image_processor_class("Qwen2VLImageProcessor")
        return cls_(patch_size=vc.patch_size, merge_size=vc.spatial_merge_size,
                    temporal_patch_size=vc.temporal_patch_size, image_mean=[0.5] * 3, image_std=[0.5] * 3)

    # -- images ---------------------------------------------------------------------------------
    def encode_images(self, images: Sequence[np.ndarray], instructions: Sequence[str] | None = None) -> torch.Tensor:
        px = self.image_size * self.image_size
        inp = self.processed(images, size={"shortest_edge": px, "longest_edge": px})
        pv, thw = inp["pixel_values"], inp["image_grid_thw"]  # (N·g²·merge², C·tp·p²), (N, 3)
        feats = self.model.get_image_features(pixel_values=pv, image_grid_thw=thw).pooler_output  # N x (g², d)
        return torch.stack(list(feats))  # (N, g², d)

    def image_grid_thw(self, n_images: int) -> torch.Tensor:
        """(N, 3) patch grid of ``n_images`` images (before merging), as the processor reports it."""
        g = self.grid * self.model.config.vision_config.spatial_merge_size
        return torch.tensor([[1, g, g]] * n_images, dtype=torch.long)

    # -- positions ------------------------------------------------------------------------------
    def mm_token_type_ids(self, batch: AssembledBatch) -> torch.Tensor:
        """0 at text positions, 1 at image-token positions (the model's own convention).  (B, T)"""
        out = torch.zeros_like(batch.attention_mask)
        for b, spans in enumerate(batch.spans):
            for role, _, s, e in spans:
                if role == "image":
                    out[b, s:e] = 1
        return out

    def position_ids(self, batch: AssembledBatch) -> torch.Tensor:
        """M-RoPE ids (temporal, height, width) of every position, see the module docstring.  (3, B, T)"""
        B, T = batch.attention_mask.shape
        g, n_tok = self.grid, self.grid * self.grid
        pos = torch.zeros(3, B, T, dtype=torch.long)
        rows = torch.arange(g).repeat_interleave(g)  # (g²,) row index of each image token
        cols = torch.arange(g).repeat(g)  # (g²,) column index
        for b, spans in enumerate(batch.spans):
            p = 0
            for role, _, s, e in sorted(spans, key=lambda x: x[2]):
                n = e - s
                if role == "image":
                    if n % n_tok:
                        raise ValueError(f"an image segment of {n} positions is not a whole number of "
                                         f"{n_tok}-token images")
                    for k in range(n // n_tok):
                        a = s + k * n_tok
                        pos[0, b, a:a + n_tok] = p
                        pos[1, b, a:a + n_tok] = p + rows
                        pos[2, b, a:a + n_tok] = p + cols
                        p += g
                else:
                    pos[:, b, s:e] = torch.arange(p, p + n)
                    p += n
        return pos.to(batch.attention_mask.device)

    def next_positions(self, pos: torch.Tensor) -> torch.Tensor:
        """(3, B, 1): the next text position, max over all three ids so far + 1."""
        nxt = pos.amax(dim=(0, 2)) + 1  # (B,)
        return nxt.view(1, -1, 1).expand(3, -1, 1).contiguous()

    def _beam_search(self, batch: AssembledBatch, max_new_tokens: int, num_beams: int) -> list[list[int]]:
        raise ValueError(f"{type(self).__name__}: beam search is not supported (generate() would rebuild "
                         f"M-RoPE positions without the images); use num_beams=1")


class Qwen25VLBackbone(Qwen2VLBackbone):
    kind = "qwen2.5-vl"
    model_types = ("qwen2_5_vl",)
