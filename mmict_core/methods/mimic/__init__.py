"""MimIC: Mimic In-Context Learning (Jiang et al., CVPR 2025).  See docs/methods/mimic.md."""
from .config import MimICConfig
from .model import MimIC

__all__ = ["MimIC", "MimICConfig"]
