"""LoRA's configuration."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..base import MethodConfig, check_range


@dataclass
class LoRAConfig(MethodConfig):
    """LoRA on the language model's linear layers, through peft's LoRA layer classes.

    Args:
        r: rank of each update B A (the MimIC/HiFICL baseline: 16).
        lora_alpha: the update is scaled by lora_alpha / r (baseline: 32).
        lora_dropout: dropout on the LoRA branch's input during training (baseline: 0.05).
        target_modules: names of the decoder layers' linear modules to adapt (baseline: the
            attention projections q, k, v, o).  Only the LM's decoder layers are searched, never
            the vision tower or the Q-Former.
    """

    rank_field = "r"  # ClassVar on the base
    r: int = field(default=16, metadata={"help": "rank of the low-rank update"})
    lora_alpha: float = field(default=32.0, metadata={"help": "the update is scaled by lora_alpha / r"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA branch's input while training"})
    target_modules: tuple = field(default=("q_proj", "k_proj", "v_proj", "o_proj"),
                                  metadata={"help": "names of the LM decoder layers' linear modules to adapt"})

    def validate(self) -> None:
        check_range(self, "r", 1, 4096)
        if not isinstance(self.r, int):
            raise ValueError(f"LoRAConfig.r must be a whole number, got {self.r!r}")
        check_range(self, "lora_alpha", 1e-6, 1e6)
        check_range(self, "lora_dropout", 0.0, 0.9)
        if isinstance(self.target_modules, str):
            self.target_modules = (self.target_modules,)
        self.target_modules = tuple(self.target_modules)
        if not self.target_modules or not all(isinstance(t, str) and t and "." not in t for t in self.target_modules):
            raise ValueError("LoRAConfig.target_modules must be a non-empty list of module names such as "
                             f"'q_proj' (no dots), got {self.target_modules!r}")
        if len(set(self.target_modules)) != len(self.target_modules):
            raise ValueError(f"LoRAConfig.target_modules lists a name twice: {self.target_modules!r}")
