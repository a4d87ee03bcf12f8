"""Where an adapter's attention goes: mass on its virtual keys per layer, head and position.

For any method implementing the attention-capture protocol (:class:`..methods.AttentionCapture`:
HiFICL's virtual K/V pairs, MimIC's gated shift as one slot, ...).  Captured through the adapter's
own attention function, so the numbers are exactly those of the forward pass, not a second
implementation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data import Episode
from ..methods.base import captures_attention


@dataclass
class VirtualKVAttention:
    """One episode's attention split (real keys vs virtual slots).  L layers, H heads, T positions, n virtual slots."""

    alpha: np.ndarray  # (L, H, T) α: share of the real (sequence) keys
    virtual_mass: np.ndarray  # (L, H, T) 1 − α: share of the virtual keys
    slot_weights: np.ndarray  # (L, H, T, n) w: share of each virtual slot (sums to 1 − α over n)
    roles: np.ndarray  # (T,) str: 'bos', 'prompt', 'image', 'answer', ...
    items: np.ndarray  # (T,) int: episode item of each position (demos 0..k-1, query k; -1 for BOS)
    labels: np.ndarray  # (T,) str: the text token, or '<img i>' (i-th token of the image segment)
    token_ids: np.ndarray  # (T,) int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(L, H, T, n)"""
        return tuple(self.slot_weights.shape)  # type: ignore[return-value]


def _token_label(backbone, tid: int) -> str:
    text = backbone.decode([tid])
    if text:
        return text
    names = {backbone.bos_token_id: "<bos>", backbone.eos_token_id: "<eos>", backbone.pad_token_id: "<pad>"}
    if tid in names:
        return names[tid]
    tok = getattr(backbone, "tokenizer", None)
    name = tok.id_to_token(tid) if hasattr(tok, "id_to_token") else None  # e.g. the <answer> marker
    return name or f"<{tid}>"


@torch.no_grad()
def virtual_kv_attention(method, episode: Episode, *, with_answer: bool = True) -> VirtualKVAttention:
    """Run ``episode`` as ``method`` (any :class:`AttentionCapture` method) sees it and return its attention split.

    ``with_answer``: include the reference answer (teacher-forced), so the answer tokens show too."""
    if not captures_attention(method):
        raise TypeError(f"{type(method).__name__} does not capture its attention (no virtual key/value slots); "
                        f"pass an adapter that implements capture(), e.g. HiFICL or MimIC")
    bb = method.backbone
    batch = method.batch([episode], with_answer=with_answer, padding_side="right")
    with method.attached(), method.capture() as cap:
        bb.forward(batch)
    L = len(cap)
    alpha = torch.stack([cap[l][0][0] for l in range(L)]).float().cpu().numpy()  # (L, H, T)
    w = torch.stack([cap[l][1][0] for l in range(L)]).float().cpu().numpy()  # (L, H, T, n)
    roles, items, labels, ids = token_table(bb, batch)
    return VirtualKVAttention(alpha=alpha, virtual_mass=1.0 - alpha, slot_weights=w, roles=roles, items=items,
                              labels=labels, token_ids=ids)


def token_table(backbone, batch) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(roles, items, labels, token_ids), each (T,), of the first sequence of an assembled ``batch``:
    each position's role ('bos', 'prompt', 'image', ...), episode item, readable label (the text token,
    or '<img i>' for the i-th token of an image segment) and token id."""
    ids = batch.token_ids[0].tolist()
    T = len(ids)
    roles, items, labels = [""] * T, [-1] * T, [""] * T
    for role, item, s, e in batch.spans[0]:
        for j, p in enumerate(range(s, e)):
            roles[p], items[p] = role, item
            labels[p] = f"<img {j}>" if role == "image" else _token_label(backbone, ids[p])
    return np.array(roles), np.array(items), np.array(labels), np.array(ids)
