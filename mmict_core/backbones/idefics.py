"""Idefics2 (``Idefics2ForConditionalGeneration``: SigLIP-style encoder -> perceiver resampler ->
a fixed number of latents per image) and Idefics3 / SmolVLM (``Idefics3ForConditionalGeneration``:
encoder -> pixel shuffle by ``scale_factor`` -> projection).

Images are never split into sub-images here (``do_image_splitting=False``): each image is one
square of ``image_size`` px and one block of LM tokens, so the interleaved layout stays one block
per image.  (The checkpoints' own processor would add ``<fake_token_around_image>`` /
row-column text tokens around split crops; the plain ICL layout of this project has none.)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .hf import HFBackbone, image_processor_class


class _IdeficsBase(HFBackbone):
    processor_kwargs = {"do_image_splitting": False}

    def resized_for_processor(self, images: Sequence[np.ndarray]):
        return [[im] for im in self.resized(images)]  # one sample per image: (N, 1, 3, S, S)

    def encode_images(self, images: Sequence[np.ndarray], instructions: Sequence[str] | None = None) -> torch.Tensor:
        inp = self.processed(images)
        pv = inp["pixel_values"]  # (N, 1, 3, S, S)
        mask = inp.get("pixel_attention_mask")  # (N, 1, S, S) or None
        feats = self.model.get_image_features(pixel_values=pv, pixel_attention_mask=mask).pooler_output
        return torch.stack(list(feats))  # N x (n_tok, d) -> (N, n_tok, d)


class Idefics2Backbone(_IdeficsBase):
    kind = "idefics2"
    model_types = ("idefics2",)

    def default_image_size(self) -> int:
        size = getattr(self.image_processor, "size", None) or {}
        return int(size.get("shortest_edge") or self.model.config.vision_config.image_size)

    @classmethod
    def default_image_processor(cls, config):
        s = int(config.vision_config.image_size)
        cls_ = image_processor_class("Idefics2ImageProcessor")
        return cls_(do_image_splitting=False, size={"shortest_edge": s, "longest_edge": s},
                    image_mean=[0.5] * 3, image_std=[0.5] * 3)


class Idefics3Backbone(_IdeficsBase):
    kind = "idefics3"
    model_types = ("idefics3", "smolvlm")

    def default_image_size(self) -> int:
        size = getattr(self.image_processor, "max_image_size", None) or {}
        return int(size.get("longest_edge") or self.model.config.vision_config.image_size)

    @classmethod
    def default_image_processor(cls, config):
        s = int(config.vision_config.image_size)
        cls_ = image_processor_class("Idefics3ImageProcessor")
        return cls_(do_image_splitting=False, size={"longest_edge": s},
                    max_image_size={"longest_edge": s}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
