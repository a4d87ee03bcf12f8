"""LoRA baseline (Hu et al., 2021) through peft's layer classes.  See docs/methods/lora.md."""
from .config import LoRAConfig
from .model import LoRA

__all__ = ["LoRA", "LoRAConfig"]
