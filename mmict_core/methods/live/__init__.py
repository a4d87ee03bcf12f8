"""LIVE: Learnable In-Context Vector (Peng et al., NeurIPS 2024).  See docs/methods/live.md."""
from .config import LIVEConfig
from .model import LIVE, norm_preserving_shift

__all__ = ["LIVE", "LIVEConfig", "norm_preserving_shift"]
