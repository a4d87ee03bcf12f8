"""Exercises of notebook 05 (quantisation).  Checked against bitsandbytes' own LLM.int8 row-wise
quantiser and the library's memory count; the worked solutions are plain implementations."""
from __future__ import annotations

import random

import torch
from torch import nn

from .core import Exercise, exercise, same
from .solutions import nb05 as solutions

# ---------------------------------------------------------------- 05.absmax_int8


def _absmax_ref(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bitsandbytes' LLM.int8 row-wise quantiser: (int8 weights (rows, cols), absmax per row (rows,))."""
    from ..backbones.quant import import_bitsandbytes_quietly

    import_bitsandbytes_quietly()
    import bitsandbytes.functional as F

    q, absmax, _ = F.int8_vectorwise_quant(W.float())
    return q, absmax


def _absmax_cases(rng: random.Random):
    g = torch.Generator().manual_seed(rng.randint(0, 2**31))
    cases = []
    for rows, cols in ((4, 6), (16, 32), (64, 48), (1, 9)):
        W = torch.randn(rows, cols, generator=g) * rng.choice([0.02, 1.0, 3.0])  # (rows, cols)
        if rows > 1:  # an outlier: one large weight sets its row's scale, not the others'
            W[rows // 2, cols // 3] = 40.0
        cases.append(((W,), {}))
    return cases


def _same_int8(got, want) -> bool:
    """Same absmax; int8 values equal up to a rare off-by-one where W * 127 / absmax lands on .5 (the
    order of the float operations decides the rounding there)."""
    if not (isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(x, torch.Tensor) for x in got)):
        return False
    (q, a), (q_ref, a_ref) = got, want
    if q.dtype != torch.int8 or q.shape != q_ref.shape or not same(a.float(), a_ref.float()):
        return False
    diff = (q.int() - q_ref.int()).abs()
    return int(diff.max()) <= 1 and int((diff > 0).sum()) <= max(1, q.numel() // 500)


def _per_tensor(W):  # one scale for the whole matrix: an outlier row squashes every other row to few levels
    a = W.abs().max()
    return torch.round(W * 127 / a).to(torch.int8), a.expand(W.shape[0]).float()


def _truncate(W):  # .to(torch.int8) truncates towards zero: no rounding
    a = W.abs().amax(1)
    return (W * (127 / a)[:, None]).to(torch.int8), a


def _scale_128(W):  # int8 reaches -128, but LLM.int8 maps absmax to 127 (symmetric)
    a = W.abs().amax(1)
    return torch.round(W * (128 / a)[:, None]).clamp(-128, 127).to(torch.int8), a


exercise(Exercise(
    key="05.absmax_int8", title="05 · row-wise absmax int8 quantisation (LLM.int8's weight format)",
    reference=_absmax_ref, cases=_absmax_cases, solution=solutions.absmax_quantize, same=_same_int8,
    hints=("one scale per ROW (output feature): absmax = W.abs().amax(dim=1), shape (rows,)",
           "q = round(W * 127 / absmax[:, None]) as torch.int8: the row's largest |weight| maps to ±127 (not 128), "
           "and round before the cast (.to(torch.int8) alone truncates)",
           "return the pair (q, absmax): q int8 (rows, cols), absmax float (rows,); dequantised W ≈ q * absmax[:, None] / 127"),
    wrong=(_per_tensor, _truncate, _scale_128)))

# ---------------------------------------------------------------- 05.memory_by_dtype


def _memory_ref(model):
    from ..backbones.quant import memory_by_dtype

    return memory_by_dtype(model)


class _Tiny(nn.Module):
    def __init__(self, d: int, dtype: torch.dtype):
        super().__init__()
        self.proj = nn.Linear(d, 2 * d).to(dtype)
        self.norm = nn.BatchNorm1d(2 * d)  # buffers: running mean / var (fp32) and a step count (int64)
        self.register_buffer("positions", torch.arange(d))  # int64 buffer

    def __repr__(self) -> str:
        p = self.proj
        return (f"<a small model: Linear({p.in_features} -> {p.out_features}) in {p.weight.dtype}, "
                f"BatchNorm1d({p.out_features}), an int64 buffer of {self.positions.numel()}>")


def _memory_cases(rng: random.Random):
    out = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        d = rng.randint(2, 12)
        out.append(((_Tiny(d, dtype),), {}))
    shared = nn.Linear(rng.randint(2, 8), 3)
    out.append(((nn.Sequential(shared, nn.ReLU(), nn.Linear(3, 3), nn.Embedding(7, 3).half()),), {}))
    return out


def _numel_only(model):  # counts values, not bytes: an fp16 model would "weigh" as much as fp32
    counts = {}
    for t in list(model.parameters()) + list(model.buffers()):
        counts[t.dtype] = counts.get(t.dtype, 0) + t.numel()
    return counts


def _parameters_only(model):  # forgets buffers (BatchNorm statistics, position ids)
    counts = {}
    for t in model.parameters():
        counts[t.dtype] = counts.get(t.dtype, 0) + t.numel() * t.element_size()
    return counts


exercise(Exercise(
    key="05.memory_by_dtype", title="05 · a model's memory in bytes, by dtype",
    reference=_memory_ref, cases=_memory_cases, solution=solutions.memory_by_dtype,
    hints=("bytes of one tensor = t.numel() * t.element_size() (4 for float32, 2 for float16/bfloat16, 1 for int8/uint8)",
           "count model.parameters() AND model.buffers() (BatchNorm's running statistics and step count, position ids)",
           "return {dtype: bytes} keyed by the torch.dtype itself, e.g. {torch.float32: 1024, torch.int64: 8}"),
    wrong=(_numel_only, _parameters_only)))
