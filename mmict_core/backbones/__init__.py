"""One interface over VLMs (teaching VLM, InstructBLIP family, ...), quantisation, assembly."""
from .base import AssembledBatch, Segment, VLMBackbone
from .quant import QUANT_MODES, quantization_config
from .teaching import ASSETS_DIR, InstructBlipBackbone, TeachingVLM, teaching_config


def load_backbone(spec: str | None = None, quant: str = "none", device: str = "cpu") -> VLMBackbone:
    """Load a backbone: None / 'teaching' for the shipped teaching VLM, or a teaching-VLM folder."""
    if spec in (None, "", "teaching", "teaching-vlm"):
        return TeachingVLM.load(None, quant=quant, device=device)
    return TeachingVLM.load(spec, quant=quant, device=device)


__all__ = ["AssembledBatch", "Segment", "VLMBackbone", "QUANT_MODES", "quantization_config", "ASSETS_DIR",
           "InstructBlipBackbone", "TeachingVLM", "teaching_config", "load_backbone"]
