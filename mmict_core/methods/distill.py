"""Teacher / student plumbing shared by the distillation methods (MimIC, LIVE, M2IV, and any new one).

The teacher is the frozen backbone with no adapter attached, reading the k-shot ICL episode; the
student is the adapted backbone reading the query alone.  The query's own tokens (prompt, image,
answer) are identical in both inputs, so they align one-to-one: :func:`query_positions` gives
them in each batch, and :func:`answer_logit_positions` the positions whose logits predict the
answer tokens.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from ..backbones.base import IGNORE, AssembledBatch
from ..data import Episode

QUERY_ROLES = ("prompt", "image", "answer")


@contextlib.contextmanager
def capture_outputs(modules: Sequence[nn.Module]) -> Iterator[list[torch.Tensor | None]]:
    """Record each module's forward output (first element of a tuple) while the block runs."""
    store: list[torch.Tensor | None] = [None] * len(modules)
    handles = []
    for i, m in enumerate(modules):
        def hook(mod, args, out, i=i):
            store[i] = out[0] if isinstance(out, tuple) else out
        handles.append(m.register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def query_positions(batch: AssembledBatch, row: int) -> list[int]:
    """Positions of the query item's tokens (the last item of the row), in sequence order."""
    query_item = max(it for _, it, _, _ in batch.spans[row])
    return sorted(p for role in QUERY_ROLES for p in batch.positions(row, role, query_item))


def answer_logit_positions(batch: AssembledBatch, row: int) -> list[int]:
    """Positions whose logits predict a labelled token (label at p + 1 is not ignored)."""
    lab = batch.labels[row]
    return [p - 1 for p in (lab != IGNORE).nonzero().flatten().tolist()]


def gather_rows(x: torch.Tensor, positions: list[list[int]]) -> torch.Tensor:
    """Concatenate ``x[b, positions[b]]`` over rows.  (sum_b len(positions[b]), ...)"""
    return torch.cat([x[b, p] for b, p in enumerate(positions)], 0)


def kl_teacher_student(teacher_logits: torch.Tensor, student_logits: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """KL(teacher || student) per position, averaged: sum p_t (log(p_t + eps) - log(p_s + eps)) (LIVE's form)."""
    pt = teacher_logits.float().softmax(-1)
    ps = student_logits.float().softmax(-1)
    return (pt * ((pt + eps).log() - (ps + eps).log())).sum(-1).mean()


def teacher_student_batches(method, episodes: Sequence[Episode], loss_on: str = "query"
                            ) -> tuple[AssembledBatch, AssembledBatch]:
    """(teacher batch: k-shot episode, labels on the query's answer; student batch: the episode as
    ``method`` reads it at inference, usually the query alone).

    Every image is encoded once (the image path is frozen and untouched by these adapters), so the
    query's image tokens are the very same tensors in both inputs and the query positions align."""
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


def check_detached(method) -> None:
    """The teacher must run on the bare backbone: refuse a loss() called inside attached()."""
    if method._depth:
        raise RuntimeError(f"{type(method).__name__}.loss() runs the teacher without the adapter and attaches it "
                           f"for the student itself; call it outside `with method.attached():`")
