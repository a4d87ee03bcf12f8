"""Teacher and student inputs of one training batch (MimIC and LIVE).

The teacher reads the k-shot episode, the student the query alone.  Every image is encoded once
(the image path is frozen and untouched by these adapters), so the query's image tokens are the
very same tensors in both inputs and the query positions align exactly.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ...backbones.base import AssembledBatch
from ...data import Episode
from ..base import Method


def teacher_student_batches(method: Method, episodes: Sequence[Episode], loss_on: str = "query"
                            ) -> tuple[AssembledBatch, AssembledBatch]:
    """(teacher batch: k-shot episode, labels on the query's answer; student batch: query only)."""
    bb = method.backbone
    items = [ex for ep in episodes for ex in list(ep.demos) + [ep.query]]
    with torch.no_grad():
        feats = bb.encode_items(items)  # one (n_img, n_tok, d) per item
    teacher, student, s = [], [], 0
    for ep in episodes:
        n = ep.k + 1
        teacher.append(bb.episode_segments(ep, with_answer=True, loss_on="query", image_tokens=feats[s:s + n]))
        student.append(bb.episode_segments(method.inference_episode(ep), with_answer=True, loss_on=loss_on,
                                           image_tokens=feats[s + n - 1:s + n]))
        s += n
    return bb.assemble(teacher), bb.assemble(student)


def check_detached(method: Method) -> None:
    """The teacher must run on the bare backbone: refuse a loss() called inside attached()."""
    if method._depth:
        raise RuntimeError(f"{type(method).__name__}.loss() runs the teacher without the adapter and attaches it "
                           f"for the student itself; call it outside `with method.attached():`")
