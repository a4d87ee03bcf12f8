"""Presets that reproduce the papers' protocols (``configs/*.yaml``): HiFICL and MimIC on
Idefics2-8B-base and LLaVA-Interleave-7B (VQAv2 10k val subset, OK-VQA val, COCO Karpathy), MMICT
on InstructBLIP (MSVD captions, VQAv2) -- backbone, data, method, trainer, decoding and the papers'
reference numbers in one file.  ``mmict preset list | show NAME | run NAME [--dry-run] [--tiny]``;
docs/presets.md.  Importing this package imports no model code.
"""
from .schema import CONFIGS_DIR, PresetError, apply_overrides, dump, load_preset, preset_names, validate


def build_pipeline(preset: dict, tiny: str | None = None, out_dir=None):
    """See :func:`.pipeline.build_pipeline` (imported lazily: it loads torch and the backbones)."""
    from .pipeline import build_pipeline as build

    return build(preset, tiny=tiny, out_dir=out_dir)


def run_preset(preset: dict, **kwargs):
    """See :func:`.pipeline.run_preset`."""
    from .pipeline import run_preset as run

    return run(preset, **kwargs)


__all__ = ["CONFIGS_DIR", "PresetError", "apply_overrides", "build_pipeline", "dump", "load_preset", "preset_names",
           "run_preset", "validate"]
