"""MimIC's configuration."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..base import MethodConfig, check_range

Z2_MODES = ("masked", "faithful")


@dataclass
class MimICConfig(MethodConfig):
    """MimIC (Jiang et al., CVPR 2025): a query-gated shift per layer and head after attention.

    Args:
        train_shots: demonstrations in the teacher's k-shot episode (the paper: 32 for Idefics-9b,
            8 for Idefics2; 4 suits the teaching VLM's context).
        z2: 'masked' computes the query partition log Z2 under the causal + padding mask (train and
            cached generation agree); 'faithful' sums over every key, as the official code does.
        align_weight: weight of the layer-wise MSE between student and teacher MLP outputs.
        ce_weight: weight of the cross-entropy of the student (the paper's lambda = 0.5).
        shift_init_std: std of the N(0, s^2) initialisation of the shift vectors v.
        gate_init_std: std of the N(0, s^2) initialisation of the log-Z1 weights w (b starts at 0).
    """

    train_shots: int = field(default=4, metadata={"help": "demonstrations in the teacher's k-shot episode during training"})
    z2: str = field(default="masked", metadata={"help": "log Z2 over 'masked' (causal + padding) keys, or 'faithful': every key, as the official code"})
    align_weight: float = field(default=1.0, metadata={"help": "weight of the layer-wise alignment loss (MSE to the teacher's MLP outputs)"})
    ce_weight: float = field(default=0.5, metadata={"help": "weight of the student's cross-entropy (the paper's lambda)"})
    shift_init_std: float = field(default=1e-3, metadata={"help": "std of the initial shift vectors v (paper: 0.001)"})
    gate_init_std: float = field(default=0.02, metadata={"help": "std of the initial log-Z1 weights w (paper: 0.02; b starts at 0)"})

    def validate(self) -> None:
        check_range(self, "train_shots", 1, 256)
        check_range(self, "z2", choices=Z2_MODES)
        check_range(self, "align_weight", 0.0, 100.0)
        check_range(self, "ce_weight", 0.0, 100.0)
        if self.align_weight == 0 and self.ce_weight == 0:
            raise ValueError("MimICConfig.align_weight and ce_weight are both 0: nothing would be trained")
        check_range(self, "shift_init_std", 0.0, 1.0)
        check_range(self, "gate_init_std", 0.0, 1.0)
