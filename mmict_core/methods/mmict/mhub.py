"""The M-Hub: the backbone's Q-Former run over ``[query tokens ; text]`` (InstructBLIP style).

One run per episode item.  MMICT reads two different slices of the output:

- a demonstration (image + its full text "prompt answer") -> the *text-token* slice
  ``states[Q : Q + L_real]`` ("visual-guided textual features");
- the query (image + its prompt) -> the *query-token* slice ``states[:Q]``
  ("instruction-guided visual features").

Pad positions of the text are never read: only the ``L_real`` real tokens of each item are kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

HUB_PARTS = ("qformer", "query_tokens", "language_projection")  # attributes of backbone.model


@dataclass
class HubRun:
    """One item's Q-Former run."""

    states: torch.Tensor  # (Q + L, d_q) outputs over [query tokens ; text (padded to the group's L)]
    text_positions: list[int]  # output positions of the real (non-pad) text tokens, in order
    text_ids: list[int]  # the Q-Former input ids at those positions
    num_query: int  # Q

    def text_slice(self) -> torch.Tensor:
        """Visual-guided textual features.  (L_real, d_q)"""
        return self.states[self.text_positions]

    def query_slice(self) -> torch.Tensor:
        """Instruction-guided visual features.  (Q, d_q)"""
        return self.states[: self.num_query]


def check_hub_backbone(backbone, method: str) -> None:
    """Refuse a backbone without an InstructBLIP-style Q-Former that reads text."""
    model = getattr(backbone, "model", None)
    missing = [f"model.{n}" for n in HUB_PARTS if not hasattr(model, n)]
    missing += [f"{n}()" for n in ("vision_states", "qformer_text", "qformer_states") if not callable(getattr(backbone, n, None))]
    if missing:
        raise TypeError(
            f"{method} needs a backbone whose Q-Former reads text (InstructBLIP family: model.qformer, "
            f"model.query_tokens, model.language_projection, vision_states(), qformer_text(), qformer_states()); "
            f"{type(backbone).__name__} lacks {missing}")
    for n in HUB_PARTS:
        part = getattr(model, n)
        params = [part] if isinstance(part, torch.Tensor) else list(part.parameters())
        if any(not p.is_floating_point() for p in params):
            raise TypeError(f"{method} trains model.{n}, but it is quantised; load the backbone with it in full "
                            f"precision (the default skip list keeps it so)")


def run_mhub(backbone, images: Sequence[Sequence[np.ndarray]], texts: Sequence[str]) -> list[HubRun]:
    """The Q-Former run for each item (its images, its text), batched.

    The frozen vision encoder runs without autograd.  An item with several images (frames) gets its
    images' patch states concatenated along the token axis (MMICT's video handling); items are
    grouped by image count, one Q-Former call per group.
    """
    if len(images) != len(texts):
        raise ValueError(f"{len(images)} items but {len(texts)} texts")
    with torch.no_grad():
        vis = backbone.vision_states([im for ims in images for im in ims])  # (N_img, S, d_v)
    per_item = torch.split(vis, [len(ims) for ims in images])  # item i: (n_i, S, d_v)
    Q = int(backbone.model.query_tokens.shape[1])
    runs: list[HubRun | None] = [None] * len(texts)
    for n in sorted({len(ims) for ims in images}):
        idx = [i for i, ims in enumerate(images) if len(ims) == n]
        v = torch.stack([per_item[i].reshape(-1, vis.shape[-1]) for i in idx])  # (G, n*S, d_v)
        states, tmask = backbone.qformer_states(v, [texts[i] for i in idx])  # (G, Q+L, d_q), (G, L)
        ids, _ = backbone.qformer_text([texts[i] for i in idx])  # (G, L): the ids qformer_states read
        for g, i in enumerate(idx):
            real = tmask[g].nonzero().flatten().tolist()  # real text tokens (pads dropped)
            runs[i] = HubRun(states[g], [Q + p for p in real], ids[g, real].tolist(), Q)
    return runs  # type: ignore[return-value]


def qformer_tokens(backbone, ids: Sequence[int]) -> list[str]:
    """The Q-Former input tokens of ``ids``, read with the Q-Former's own tokenizer where the
    backbone has one (real InstructBLIP: a BERT WordPiece vocabulary, not the LM's)."""
    tok = getattr(backbone, "qformer_tokenizer", None)
    if tok is not None and hasattr(tok, "convert_ids_to_tokens"):
        return list(tok.convert_ids_to_tokens(list(ids)))
    return [backbone.decode([t]) for t in ids]  # the teaching VLM: one vocabulary for both


def demo_text(example) -> str:
    """A demonstration's full text for the M-Hub: its prompt, then its answer."""
    return f"{example.prompt} {example.answer}".strip()
