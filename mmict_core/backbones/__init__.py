"""One interface over VLMs (teaching VLM, InstructBLIP, LLaVA, Idefics2/3, Qwen2-VL/2.5-VL), quantisation, assembly."""
from pathlib import Path

from .base import AssembledBatch, Segment, VLMBackbone
from .quant import QUANT_MODES, quantization_config
from .teaching import ASSETS_DIR, META_FILE as TEACHING_META, InstructBlipBackbone, TeachingVLM, teaching_config


def load_backbone(spec: str | None = None, quant: str = "none", device: str = "cpu", **options) -> VLMBackbone:
    """Load a backbone.

    ``spec``: None / 'teaching' for the shipped teaching VLM; a teaching-VLM folder; or a real
    checkpoint -- a local folder or a hub id already in the local Hugging Face cache (nothing is
    ever downloaded; a missing checkpoint fails at once saying where to put the weights).  Real
    checkpoints are dispatched on their config's ``model_type`` (see :mod:`.loading`).
    ``options`` (real checkpoints): ``device_map`` (e.g. 'auto'), ``dtype``, ``trust_remote_code``
    (default False), ``image_size``.
    """
    if spec in (None, "", "teaching", "teaching-vlm"):
        return TeachingVLM.load(None, quant=quant, device=device)
    if (Path(str(spec)).expanduser() / TEACHING_META).is_file():
        return TeachingVLM.load(spec, quant=quant, device=device)
    from .loading import load_hf_backbone

    return load_hf_backbone(spec, quant=quant, device=device, **options)


def __getattr__(name: str):  # the real-checkpoint adapters import transformers classes lazily
    if name in ("HFBackbone",):
        from .hf import HFBackbone
        return HFBackbone
    if name in ("load_hf_backbone", "resolve_checkpoint", "MissingCheckpointError", "ADAPTERS"):
        from . import loading
        return getattr(loading, name)
    if name in ("tiny_backbone", "TINY_KINDS"):
        from . import tiny
        return getattr(tiny, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AssembledBatch", "Segment", "VLMBackbone", "QUANT_MODES", "quantization_config", "ASSETS_DIR",
           "InstructBlipBackbone", "TeachingVLM", "teaching_config", "load_backbone", "HFBackbone", "load_hf_backbone",
           "resolve_checkpoint", "MissingCheckpointError", "ADAPTERS", "tiny_backbone", "TINY_KINDS"]
