"""MimIC: per layer and head, a shift vector gated by a linear approximation of the demos' log Z1.

Per head, attention over demos + query splits as (1 - mu) SA(q, K, V) + mu SA(q, K_D, V_D) with
mu = Z1 / (Z1 + Z2).  MimIC keeps SA(q, K, V), replaces log Z1 by f(q) = w.q + b and the demo
term by a learned vector v:  out = SA(q, K, V) + mu~(q) v,  mu~ = exp(f - logaddexp(f, log Z2)).
Trained to mimic the k-shot teacher's MLP outputs layer by layer (+ lambda * CE).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...data import Episode
from ..attention import install_attention
from ..base import Handle, Method
from ..distill import capture_outputs, check_detached, gather_rows, query_positions, teacher_student_batches
from ..registry import register_method
from . import attention
from .config import MimICConfig


@register_method
class MimIC(Method):
    name = "mimic"
    config_class = MimICConfig
    tiny_config = {"train_shots": 1}
    needs_teacher = True
    summary = "MimIC: query-gated shift vector per attention head, trained to mimic the k-shot teacher layer by layer"

    def __init__(self, backbone, config: MimICConfig | None = None):
        super().__init__(backbone, config)
        L, H, D = backbone.num_layers, backbone.num_heads, backbone.head_dim
        self.num_layers, self.num_heads, self.head_dim = L, H, D
        g = torch.Generator().manual_seed(self.config.seed)
        dev = backbone.device
        self.shift = nn.Parameter((torch.randn(L, H, D, generator=g) * self.config.shift_init_std).to(dev))  # v (L, H, D)
        self.gate_w = nn.Parameter((torch.randn(L, H, D, generator=g) * self.config.gate_init_std).to(dev))  # w (L, H, D)
        self.gate_b = nn.Parameter(torch.zeros(L, H, device=dev))  # b (L, H)
        self._capture: dict | None = None

    def expected_num_parameters(self) -> int:
        return self.num_layers * self.num_heads * (2 * self.head_dim + 1)

    def _attach(self) -> list[Handle]:
        return install_attention(self, attention.ATTN_NAME)  # refuses, changing nothing, when another is attached

    @contextlib.contextmanager
    def capture(self) -> Iterator[dict[int, tuple[torch.Tensor, torch.Tensor]]]:
        """Attention-capture protocol: per layer (1 - mu (B, H, T), mu (B, H, T, 1)) — the real
        keys' share and the shift's gate mu, MimIC's one "virtual slot" standing in for the demos."""
        self._capture = {}
        try:
            yield self._capture
        finally:
            self._capture = None

    def loss(self, episodes: Sequence[Episode], loss_on: str = "query") -> tuple[torch.Tensor, dict[str, float]]:
        """align_weight * mean_l MSE(student MLP_l, teacher MLP_l) at the query's tokens + ce_weight * CE."""
        check_detached(self)
        bb = self.backbone
        teacher, student = teacher_student_batches(self, episodes, loss_on)
        mlps = [bb.mlp(i) for i in range(self.num_layers)]
        with torch.no_grad(), capture_outputs(mlps) as t_out:  # bare backbone, k-shot episode
            bb.forward(teacher)
        with self.attached(), capture_outputs(mlps) as s_out:  # adapter, query only
            logits = bb.forward(student)
        ce = bb.loss(student, logits)
        rows = range(len(episodes))
        t_pos = [query_positions(teacher, b) for b in rows]
        s_pos = [query_positions(student, b) for b in rows]
        assert [len(p) for p in t_pos] == [len(p) for p in s_pos], "teacher and student query tokens differ"
        align = torch.stack([F.mse_loss(gather_rows(s.float(), s_pos), gather_rows(t.float(), t_pos))
                             for s, t in zip(s_out, t_out)]).mean()  # mean over layers of mean over tokens
        total = self.config.align_weight * align + self.config.ce_weight * ce
        return total, {"ce": float(ce.detach()), "align": float(align.detach())}
