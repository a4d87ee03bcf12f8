"""LLaVA (``LlavaForConditionalGeneration``, incl. llava-interleave): vision tower -> selected
hidden layer (CLS dropped or not, per the config) -> 2-layer projector -> one LM token per patch."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .hf import HFBackbone, image_processor_class


def square_side(processor, fallback: int) -> int:
    """The square side an image processor produces (crop size, else size), else ``fallback``."""
    for attr in ("crop_size", "size"):
        size = getattr(processor, attr, None)
        if isinstance(size, dict) or hasattr(size, "get"):
            for key in ("height", "shortest_edge", "longest_edge"):
                v = size.get(key) if hasattr(size, "get") else None
                if v:
                    return int(v)
    return int(fallback)


class LlavaBackbone(HFBackbone):
    kind = "llava"
    model_types = ("llava",)

    def default_image_size(self) -> int:
        return square_side(self.image_processor, self.model.config.vision_config.image_size)

    @classmethod
    def default_image_processor(cls, config):
        s = int(config.vision_config.image_size)
        cls_ = image_processor_class("CLIPImageProcessor")
        return cls_(size={"shortest_edge": s}, crop_size={"height": s, "width": s},
                    image_mean=[0.5] * 3, image_std=[0.5] * 3)

    def encode_images(self, images: Sequence[np.ndarray], instructions: Sequence[str] | None = None) -> torch.Tensor:
        pv = self.processed(images)["pixel_values"]  # (N, 3, S, S)
        feats = self.model.get_image_features(pixel_values=pv).pooler_output  # N x (n_tok, d)
        return torch.stack(list(feats))  # (N, n_tok, d)
