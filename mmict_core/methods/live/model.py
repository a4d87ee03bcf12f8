"""LIVE: a learnable in-context vector per layer, added to the MLP output norm-preservingly.

h' = (h + alpha_l v_l) * ||h|| / ||h + alpha_l v_l||  at every position of the LM, on the output
of each decoder layer's MLP module (as the MimIC/HiFICL repos re-implement LIVE; the LIVE repo
itself uses the whole decoder layer's output for Idefics-9B).  Trained by KL(teacher || student)
on the answer-token logits + ce_weight * CE.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ...data import Episode
from ..base import Handle, Method
from ..distill import answer_logit_positions, gather_rows, kl_teacher_student
from ..distill import check_detached, teacher_student_batches
from ..registry import register_method
from .config import LIVEConfig


def norm_preserving_shift(h: torch.Tensor, alpha: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(h + alpha v) * ||h|| / ||h + alpha v|| over the last dim.  h (..., d), alpha (), v (d,)."""
    x = h.float()
    shifted = x + alpha * v  # (..., d)
    scale = x.norm(dim=-1, keepdim=True) / shifted.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # (..., 1)
    return (shifted * scale).to(h.dtype)


@register_method
class LIVE(Method):
    name = "live"
    config_class = LIVEConfig
    tiny_config = {"train_shots": 1}
    needs_teacher = True
    summary = "LIVE: one learnable in-context vector per layer on the MLP output (norm-preserving), distilled from k-shot ICL"

    def __init__(self, backbone, config: LIVEConfig | None = None):
        super().__init__(backbone, config)
        L, d = backbone.num_layers, backbone.hidden_size
        self.num_layers, self.hidden = L, d
        g = torch.Generator().manual_seed(self.config.seed)
        dev = backbone.device
        self.vectors = nn.Parameter((torch.randn(L, d, generator=g) * self.config.vector_init_std).to(dev))  # (L, d)
        self.alpha = nn.Parameter(torch.full((L,), float(self.config.alpha_init), device=dev))  # (L,)

    def expected_num_parameters(self) -> int:
        return self.num_layers * self.hidden + self.num_layers

    def param_groups(self, weight_decay: float) -> list[dict]:
        return [{"params": [self.vectors], "weight_decay": weight_decay},
                {"params": [self.alpha], "weight_decay": 0.0, "lr_scale": self.config.alpha_lr_scale}]

    def _attach(self) -> list[Handle]:
        handles = []
        for i in range(self.num_layers):
            def hook(mod, args, out, i=i):
                return norm_preserving_shift(out, self.alpha[i], self.vectors[i])
            handles.append(Handle(self.backbone.mlp(i).register_forward_hook(hook).remove))
        return handles

    def loss(self, episodes: Sequence[Episode], loss_on: str = "query") -> tuple[torch.Tensor, dict[str, float]]:
        """kl_weight * KL(teacher || student) on the query's answer logits + ce_weight * CE."""
        check_detached(self)
        bb = self.backbone
        teacher, student = teacher_student_batches(self, episodes, loss_on)
        with torch.no_grad():  # bare backbone, k-shot episode
            t_logits = bb.forward(teacher)
        with self.attached():  # adapter, query only
            s_logits = bb.forward(student)
        ce = bb.loss(student, s_logits)
        rows = range(len(episodes))
        t_pos = [answer_logit_positions(teacher, b) for b in rows]
        s_pos = [answer_logit_positions(student, b) for b in rows]
        assert [len(p) for p in t_pos] == [len(p) for p in s_pos], "teacher and student answer tokens differ"
        kl = kl_teacher_student(gather_rows(t_logits, t_pos), gather_rows(s_logits, s_pos))
        total = self.config.kl_weight * kl + self.config.ce_weight * ce
        return total, {"ce": float(ce.detach()), "kl": float(kl.detach())}
