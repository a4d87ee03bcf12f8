"""Worked solutions of notebook 05's exercises (see mmict_core.exercises.solutions)."""
from __future__ import annotations


def absmax_quantize(W):
    import torch

    absmax = W.abs().amax(dim=1)  # (rows,): each row's largest magnitude -> the int8 value 127
    scale = torch.where(absmax > 0, 127.0 / absmax, torch.zeros_like(absmax))  # (rows,)
    q = torch.round(W * scale[:, None]).clamp(-127, 127).to(torch.int8)  # (rows, cols)
    return q, absmax.float()


def memory_by_dtype(model):
    counts = {}
    for t in list(model.parameters()) + list(model.buffers()):  # each tensor once, shared ones too
        counts[t.dtype] = counts.get(t.dtype, 0) + t.numel() * t.element_size()
    return counts
