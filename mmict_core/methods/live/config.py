"""LIVE's configuration."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..base import MethodConfig, check_range


@dataclass
class LIVEConfig(MethodConfig):
    """LIVE (Peng et al., NeurIPS 2024): one learnable in-context vector per layer, norm-preserving.

    Args:
        train_shots: demonstrations in the teacher's k-shot episode (LIVE: 32 for Idefics-9B, 1 for
            Idefics2; 4 suits the teaching VLM).
        kl_weight: weight of KL(teacher || student) on the answer-token logits.
        ce_weight: weight of the student's cross-entropy (LIVE's hard_loss_weight, 0.5).
        alpha_init: initial per-layer scale alpha_l (0.1 in the README runs).
        vector_init_std: std of the N(0, s^2) initialisation of the vectors v_l (0.01).
        alpha_lr_scale: learning rate of alpha relative to the vectors' (LIVE: icv lr 1e-3..5e-3,
            alpha lr 1e-2; with the trainer's 5e-3 the default 2.0 gives 1e-2).
    """

    train_shots: int = field(default=4, metadata={"help": "demonstrations in the teacher's k-shot episode during training"})
    kl_weight: float = field(default=1.0, metadata={"help": "weight of KL(teacher || student) on the answer-token logits"})
    ce_weight: float = field(default=0.5, metadata={"help": "weight of the student's cross-entropy (LIVE's hard_loss_weight)"})
    alpha_init: float = field(default=0.1, metadata={"help": "initial per-layer scale alpha of the vector"})
    vector_init_std: float = field(default=0.01, metadata={"help": "std of the initial per-layer vectors"})
    alpha_lr_scale: float = field(default=2.0, metadata={"help": "alpha's learning rate relative to the vectors' (LIVE: 1e-2 vs 5e-3)"})

    def validate(self) -> None:
        check_range(self, "train_shots", 1, 256)
        check_range(self, "kl_weight", 0.0, 100.0)
        check_range(self, "ce_weight", 0.0, 100.0)
        if self.kl_weight == 0 and self.ce_weight == 0:
            raise ValueError("LIVEConfig.kl_weight and ce_weight are both 0: nothing would be trained")
        check_range(self, "alpha_init", -10.0, 10.0)
        check_range(self, "vector_init_std", 0.0, 1.0)
        check_range(self, "alpha_lr_scale", 0.0, 1000.0)
