"""Loading real VLM checkpoints: local folders or already-cached hub ids, never the network.

``load_hf_backbone(spec, quant, device)``:

1. :func:`resolve_checkpoint` turns ``spec`` into a local folder: an existing folder as is, a hub
   id only from the local Hugging Face cache (``local_files_only``).  Missing weights fail at once
   with :class:`MissingCheckpointError`, which says how to fetch them on a connected machine.
2. The folder's ``config.json`` picks the adapter by ``model_type`` (:data:`ADAPTERS`); the
   adapter may refuse the config (InstructBLIP with Flan-T5).
3. The model class named by the adapter's table loads the weights, fp32 on CPU (bf16/fp16 on GPU)
   or bitsandbytes 8-bit / nf4 4-bit with the vision tower, connector and lm_head kept in full
   precision (:func:`~mmict_core.backbones.quant.quantization_config`).
4. Tokenizer and image processor come from the folder (a class default sized from the config
   where the folder has none); ``mmict_backbone.json`` may set ``image_size`` / ``name``.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch

from .hf import HFBackbone
from .idefics import Idefics2Backbone, Idefics3Backbone
from .instructblip import InstructBlipHFBackbone
from .llava import LlavaBackbone
from .quant import DEFAULT_SKIP, quantization_config
from .qwen_vl import Qwen25VLBackbone, Qwen2VLBackbone

# config.model_type -> adapter
ADAPTERS: dict[str, type[HFBackbone]] = {
    mt: cls for cls in (InstructBlipHFBackbone, LlavaBackbone, Idefics2Backbone, Idefics3Backbone, Qwen2VLBackbone,
                        Qwen25VLBackbone) for mt in cls.model_types}
# config.model_type -> the transformers class that holds the weights
MODEL_CLASSES: dict[str, str] = {
    "instructblip": "InstructBlipForConditionalGeneration",
    "llava": "LlavaForConditionalGeneration",
    "idefics2": "Idefics2ForConditionalGeneration",
    "idefics3": "Idefics3ForConditionalGeneration",
    "smolvlm": "SmolVLMForConditionalGeneration",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
}
META_FILE = "mmict_backbone.json"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # 'org/name' (or a bare legacy name)
SKIP_MODULES = list(DEFAULT_SKIP)  # kept in full precision (both spellings: see quant.py)


class MissingCheckpointError(FileNotFoundError):
    """The weights are not on this machine (this tool never downloads)."""


def _fetch_hint(repo_id: str, folder: str | None = None) -> str:
    folder = folder or f"./weights/{repo_id.split('/')[-1]}"
    return (f"On a machine with internet access run `huggingface-cli download {repo_id} --local-dir {folder}` "
            f"(or `hf download {repo_id} --local-dir {folder}`), copy the folder here and pass it: "
            f"load_backbone('{folder}') or `--backbone {folder}`.")


def resolve_checkpoint(spec: str | os.PathLike) -> Path:
    """A local checkpoint folder for ``spec`` (a folder, or a hub id already in the local HF cache).

    Never touches the network: a hub id that is not cached raises :class:`MissingCheckpointError` at once."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise MissingCheckpointError(
                f"{path} has no config.json, so it is not a transformers checkpoint folder; pass the folder that "
                f"`huggingface-cli download ... --local-dir` wrote (or, for a teaching VLM, the folder "
                f"`mmict pretrain-teaching --out DIR` wrote)")
        return path
    if path.exists():
        raise MissingCheckpointError(f"{path} is a file; pass the checkpoint *folder* (config.json and weights)")
    if not HUB_ID.match(text):  # a path that does not exist
        raise MissingCheckpointError(
            f"no checkpoint folder at {path}. Put the weights there first: {_fetch_hint('ORG/MODEL', str(path))}")
    from huggingface_hub import snapshot_download

    try:  # the local cache only: local_files_only never opens a connection
        return Path(snapshot_download(text, local_files_only=True))
    except (OSError, ValueError) as exc:  # LocalEntryNotFoundError, an invalid repo id, ...
        raise MissingCheckpointError(
            f"the weights of {text!r} are not on this machine: there is no folder {path.resolve()} and the hub id "
            f"is not in the local Hugging Face cache (this tool never downloads). {_fetch_hint(text)}") from exc


def adapter_for(config) -> type[HFBackbone]:
    """The adapter class for a loaded config (by its ``model_type``)."""
    mt = getattr(config, "model_type", None)
    if mt not in ADAPTERS:
        arch = ", ".join(getattr(config, "architectures", None) or []) or "?"
        raise ValueError(f"no backbone adapter for model_type {mt!r} (architectures: {arch}); supported: "
                         f"{', '.join(f'{k} ({MODEL_CLASSES[k]})' for k in ADAPTERS)}")
    return ADAPTERS[mt]


def model_class_for(config):
    import transformers

    return getattr(transformers, MODEL_CLASSES[config.model_type])


def default_dtype(device: str, device_map) -> torch.dtype:
    """fp32 on CPU; bf16 (else fp16) where the model goes to GPUs."""
    if device_map is None:
        places = [str(device)]
    else:
        places = [str(v) for v in device_map.values()] if isinstance(device_map, dict) else [str(device_map)]
    if any(p not in ("cpu", "disk") for p in places) and torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_hf_backbone(spec: str | os.PathLike, quant: str = "none", device: str = "cpu", *, device_map=None,
                     dtype: torch.dtype | None = None, trust_remote_code: bool = False,
                     image_size: int | None = None) -> HFBackbone:
    """Load a real VLM checkpoint as a backbone.

    ``quant``: 'none' | '8bit' | '4bit' (bitsandbytes; nf4 + double quantisation, compute dtype by
    device).  ``device``: where the whole model goes (default CPU); ``device_map``: instead, a
    transformers device map such as 'auto' (several GPUs).  ``image_size``: the square side images
    are resized to (default: the processor's / the class's)."""
    import transformers

    folder = resolve_checkpoint(spec)
    common = dict(local_files_only=True, trust_remote_code=trust_remote_code)
    try:
        config = transformers.AutoConfig.from_pretrained(folder, **common)
    except ValueError as exc:
        raise ValueError(f"{folder}: cannot read config.json ({exc}); checkpoints with custom code need "
                         f"trust_remote_code=True, and only the classes listed in docs/backbones.md are "
                         f"supported") from exc
    adapter = adapter_for(config)
    adapter.check_config(config)
    dtype = dtype or default_dtype(device, device_map)
    kwargs = dict(common, dtype=dtype, device_map=device_map if device_map is not None else {"": device})
    qcfg = quantization_config(quant, SKIP_MODULES, compute_dtype=None if quant == "none" else dtype)
    if qcfg is not None:
        kwargs["quantization_config"] = qcfg
        logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # CPU int8 logs a cast on every call
    model = model_class_for(config).from_pretrained(folder, config=config, **kwargs)
    tok = transformers.AutoTokenizer.from_pretrained(folder, **common)
    if (folder / "preprocessor_config.json").is_file():
        proc = transformers.AutoImageProcessor.from_pretrained(folder, **common)
    else:
        proc = adapter.default_image_processor(config)
    meta = json.loads((folder / META_FILE).read_text()) if (folder / META_FILE).is_file() else {}
    extra = {}
    if adapter is InstructBlipHFBackbone and (folder / "qformer_tokenizer").is_dir():
        qtok = folder / "qformer_tokenizer"  # InstructBLIP's processor keeps the Q-Former's BERT tokenizer here
        extra["qformer_tokenizer"] = transformers.AutoTokenizer.from_pretrained(qtok, **common)
    return adapter(model, tok, proc, image_size=image_size or meta.get("image_size"),
                   name=meta.get("name") or str(spec), quant=quant, **extra)
