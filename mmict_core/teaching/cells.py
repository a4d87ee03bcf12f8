"""Auxiliary loss: the image tokens (what the LM receives) must say what is in each cell.

The vision stage teaches the ViT per-cell shape / colour / size with its own heads, but nothing
asks the Q-Former's query outputs to pass that on.  Measured on candidate 2 of the recipe (seed 1):
a linear read-out of the answer from the *instructed* image tokens was 0.64 for colour and 0.39 for
position questions, against 0.99 / 0.84 on the shipped model, while the ViT's own per-cell read-out
was 1.00 (colour) / 0.90 (shape) in both (docs/teaching/v2-recipe.md).  This loss trains a linear
read-out of every cell from the flattened image tokens jointly with the Q-Former, on fresh scenes
each step, each encoded with a question about it as the instruction (as in the episodes), so the
tokens must carry every cell whatever the question.  It names no answer of any episode.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data import shapes as sw
from ..data.tasks import episode_rng, vqa_question
from .vision import cell_labels

N_CLASSES = (1 + len(sw.SHAPES), 1 + len(sw.COLOURS), 1 + len(sw.SIZES))  # 0: empty cell


class CellReadout(nn.Module):
    """Linear map from the flattened image tokens of one image to per-cell logits."""

    def __init__(self, n_tokens: int, d: int):
        super().__init__()
        self.proj = nn.Linear(n_tokens * d, len(sw.CELLS) * sum(N_CLASSES))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        B = tokens.shape[0]
        logits = self.proj(tokens.flatten(1)).view(B, len(sw.CELLS), sum(N_CLASSES))  # (B, 4, 5+7+3)
        return logits.split(N_CLASSES, dim=-1)  # shape (B, 4, 5), colour (B, 4, 7), size (B, 4, 3)


def cell_batch(seed: int, stage: str, step: int, n: int) -> tuple[list[np.ndarray], list[str], torch.Tensor]:
    """``n`` fresh training scenes for ``step`` of ``stage``: images, one question about each (the
    Q-Former instruction), and per-cell targets (n, 4, 3)."""
    rng = episode_rng(seed, "train", f"cell-readout-{stage}", step)
    scenes = [sw.sample_scene(rng) for _ in range(n)]
    prompts = [vqa_question(rng, sc)[0] for sc in scenes]
    return [sc.render() for sc in scenes], prompts, torch.tensor([cell_labels(sc) for sc in scenes])


def cell_loss(head: CellReadout, tokens: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Mean cross-entropy over cells and the three attributes, and the accuracy (for the log)."""
    parts = head(tokens)
    targets = targets.to(tokens.device)
    loss = sum(nn.functional.cross_entropy(p.flatten(0, 1), targets[..., i].flatten()) for i, p in enumerate(parts))
    acc = float(np.mean([(p.argmax(-1) == targets[..., i]).float().mean().item() for i, p in enumerate(parts)]))
    return loss / len(parts), acc


def cell_step(vlm, head: CellReadout, seed: int, stage: str, step: int, n: int,
              frozen_vision: bool = False) -> tuple[torch.Tensor, float]:
    """Encode a fresh cell batch through the model (with gradients; none through the ViT when
    ``frozen_vision``, as in the hub stage) and return (loss, accuracy)."""
    images, prompts, targets = cell_batch(seed, stage, step, n)
    if frozen_vision:
        with torch.no_grad():
            images = vlm.vision_states(images)  # (n, 1 + patches, d_v): the Q-Former takes them as they are
    return cell_loss(head, vlm.encode_images(images, prompts), targets)
