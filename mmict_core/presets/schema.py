"""Preset files: YAML (or JSON) in ``configs/``, ``extends`` for shared parts, ``--set`` overrides,
and a schema that names every accepted key so a typo or a bad value is a clear error.

A preset is a nested dict with the sections of :data:`SCHEMA`.  ``extends: [a.yaml, b.yaml]``
(paths relative to the file) are merged first, in order, then the file itself: dicts merge key by
key, anything else (lists included) is replaced.  No model code is imported here.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import yaml

CONFIGS_DIR = Path(os.environ.get("MMICT_CONFIGS", Path(__file__).resolve().parents[2] / "configs"))
SUFFIXES = (".yaml", ".yml", ".json")


class PresetError(ValueError):
    """A preset that cannot be used: unknown name or key, a bad value; the message says which."""


# Key -> type.  "str", "int", "float", "bool", "dict", "list" (a trailing "?" allows null),
# "int|all" (a number or the word all), or a tuple of accepted values.
QUANTS = ("none", "8bit", "4bit")
TINY_KINDS = ("instructblip", "llava", "idefics2", "idefics3", "qwen2-vl", "qwen2.5-vl")  # backbones.tiny.TINY_KINDS
SCHEMA: dict[str, Any] = {
    "extends": "list?",
    "description": "str",
    "paper": "str?",
    "backbone": {"id": "str", "path": "str?", "quant": QUANTS, "device": "str", "device_map": "str?",
                 "tiny": TINY_KINDS},
    "data": {"dataset": "str", "root": "str?", "image_root": "str?", "video_dir": "str?", "annotation_file": "str?",
             "eval_questions": "str?", "eval_split": ("val", "test"), "eval_subset": "int?", "eval_seed": "int?",
             "num_frames": "int", "support_size": "int?", "support_seed": "int", "prompt_template": "str?"},
    "method": {"name": "str", "config": "dict"},
    "train": {"samples": "int|all", "sample_seed": "int", "per_caption": "bool", "epochs": "int",
              "max_steps": "int?", "batch_size": "int", "grad_accum": "int", "lr": "float", "warmup_ratio": "float?",
              "warmup_steps": "int?", "min_lr_ratio": "float", "weight_decay": "float", "clip": "float",
              "loss_on": ("answer", "full"), "seed": "int"},
    "eval": {"episodes": "int|all", "batch_size": "int", "num_beams": "int", "max_new_tokens": "int",
             "min_new_tokens": "int?", "length_penalty": "float?", "cut_at": "list", "split": ("val", "test"),
             "seed": "int", "selection": ("random", "similarity", "balanced")},
    "baselines": "list",
    "reference": {"metric": "str", "scale": "float", "unit": "str", "note": "str?", "rows": "list"},
    "output": {"dir": "str"},
}
BASELINE_KEYS = {"method": "str", "shots": "int?", "config": "dict?"}
STATUSES = ("cross-checked", "notes-only", "single-source", "variant", "discrepancy")  # docs/presets.md
REFERENCE_ROW_KEYS = {"method": "str", "shots": "int", "value": "float", "source": "str", "status": STATUSES,
                      "note": "str?"}
REQUIRED = ("description", "backbone", "data", "method", "train", "eval")
ALL = "all"


def _check(value: Any, spec: Any, where: str) -> Any:
    """``value`` checked (and numbers coerced from strings: YAML reads 5e-3 as text) against ``spec``."""
    if isinstance(spec, tuple):
        if value not in spec:
            raise PresetError(f"{where} must be one of {', '.join(map(str, spec))}; got {value!r}")
        return value
    optional = spec.endswith("?")
    kind = spec.rstrip("?")
    if value is None:
        if optional:
            return None
        raise PresetError(f"{where} must be set ({kind}); got null")
    if kind == "int|all":
        if value == ALL:
            return value
        kind = "int"
    if kind in ("int", "float") and isinstance(value, str):
        try:
            value = float(value) if kind == "float" else int(value)
        except ValueError:
            what = "whole number" if kind == "int" else "number"
            raise PresetError(f"{where} must be a {what}; got {value!r}") from None
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PresetError(f"{where} must be a whole number >= 0; got {value!r}")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PresetError(f"{where} must be a number; got {value!r}")
        value = float(value)
    elif kind == "bool" and not isinstance(value, bool):
        raise PresetError(f"{where} must be true or false; got {value!r}")
    elif kind == "str" and not isinstance(value, str):
        raise PresetError(f"{where} must be text; got {value!r}")
    elif kind == "dict" and not isinstance(value, dict):
        raise PresetError(f"{where} must be a mapping (key: value); got {value!r}")
    elif kind == "list" and not isinstance(value, list):
        raise PresetError(f"{where} must be a list; got {value!r}")
    return value


def required_keys(section: str) -> list[str]:
    """Keys a section must have: all but the optional ones ("?"); the data section needs only its dataset."""
    if section == "data":
        return ["dataset", "support_seed"]
    spec = SCHEMA[section]
    if not isinstance(spec, dict):
        return []
    return [k for k, v in spec.items() if not (isinstance(v, str) and v.endswith("?")) and k != "config"]


def _check_keys(data: dict, schema: dict, where: str) -> dict:
    out = {}
    for key, value in data.items():
        if key not in schema:
            raise PresetError(f"unknown key '{where}{key}'; {where.rstrip('.') or 'a preset'} takes: "
                              f"{', '.join(sorted(schema))}")
        spec = schema[key]
        out[key] = _check_keys(_check(value, "dict", f"{where}{key}"), spec, f"{where}{key}.") \
            if isinstance(spec, dict) else _check(value, spec, f"{where}{key}")
    return out


def validate(preset: dict, name: str = "preset") -> dict:
    """The preset with every key known and every value of the right type (numbers coerced)."""
    try:
        out = _check_keys(preset, SCHEMA, "")
        missing = [k for k in REQUIRED if k not in out]
        missing += [f"{sec}.{k}" for sec in REQUIRED if sec in out for k in required_keys(sec) if k not in out[sec]]
        if missing:
            raise PresetError(f"missing {', '.join(missing)}")
        out["baselines"] = [_check_keys(_check(b, "dict", f"baselines[{i}]"), BASELINE_KEYS, f"baselines[{i}].")
                            for i, b in enumerate(out.get("baselines", []))]
        rows = out.get("reference", {}).get("rows", [])
        out.setdefault("reference", {})["rows"] = [
            _check_keys(_check(r, "dict", f"reference.rows[{i}]"), REFERENCE_ROW_KEYS, f"reference.rows[{i}].")
            for i, r in enumerate(rows)]
    except PresetError as exc:
        raise PresetError(f"preset {name}: {exc}") from None
    return out


# -- files -------------------------------------------------------------------------------------
def _read(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise PresetError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    if not isinstance(data, dict):
        raise PresetError(f"{path} must hold a mapping of sections (backbone:, data:, ...)")
    return data


def merge(base: dict, top: dict) -> dict:
    """``top`` over ``base``: dicts merged key by key, other values replaced."""
    out = copy.deepcopy(base)
    for k, v in top.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def resolve_file(path: Path, seen: tuple = ()) -> dict:
    """The file's content with its ``extends`` merged in (recursively)."""
    path = path.resolve()
    if path in seen:
        raise PresetError(f"{path} extends itself (through {' -> '.join(p.name for p in seen)})")
    data = _read(path)
    parents = data.pop("extends", None) or []
    out: dict = {}
    for parent in ([parents] if isinstance(parents, str) else parents):
        parent_path = (path.parent / parent)
        if not parent_path.is_file():
            raise PresetError(f"{path.name}: extends {parent!r}, but {parent_path} does not exist")
        out = merge(out, resolve_file(parent_path, seen + (path,)))
    return merge(out, data)


def preset_names(folder: Path | None = None) -> list[str]:
    """The presets in ``folder`` (default ``configs/``): top-level files; ``_base/`` holds shared parts."""
    folder = Path(folder or CONFIGS_DIR)
    return sorted(p.stem for p in folder.glob("*") if p.suffix in SUFFIXES and not p.name.startswith("_"))


def preset_path(name: str, folder: Path | None = None) -> Path:
    """The file of preset ``name`` (or ``name`` itself when it is a file path)."""
    if Path(name).suffix in SUFFIXES and Path(name).is_file():
        return Path(name)
    folder = Path(folder or CONFIGS_DIR)
    for suffix in SUFFIXES:
        if (folder / f"{name}{suffix}").is_file():
            return folder / f"{name}{suffix}"
    known = preset_names(folder)
    raise PresetError(f"unknown preset {name!r}; known presets ({folder}): {', '.join(known) or 'none'}")


# -- overrides ---------------------------------------------------------------------------------
def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-4"`` -> (["train", "lr"], "1e-4" read as YAML: numbers, true/false, null, lists)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise PresetError(f"bad --set {text!r}: use KEY=VALUE with a dotted key, e.g. train.lr=1e-4 or "
                          f"data.root=/data/vqav2")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(preset: dict, overrides: list[str]) -> dict:
    """``preset`` with each ``KEY=VALUE`` set (sections are created; the schema checks the result)."""
    out = copy.deepcopy(preset)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for i, part in enumerate(path[:-1]):
            if not isinstance(node.get(part, {}), dict):
                raise PresetError(f"bad --set {text!r}: {'.'.join(path[:i + 1])} is not a section")
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def load_preset(name: str, overrides: list[str] = (), folder: Path | None = None) -> dict:
    """Preset ``name`` (a name in ``configs/`` or a file), ``extends`` merged, ``overrides`` applied, validated."""
    path = preset_path(name, folder)
    data = apply_overrides(resolve_file(path), list(overrides))
    preset = validate(data, path.stem)
    return {"name": path.stem, **{k: preset[k] for k in SCHEMA if k in preset}}  # sections in schema order


def dump(preset: dict) -> str:
    """The resolved preset as YAML (what ``mmict preset show`` prints)."""
    return yaml.safe_dump(preset, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
