"""Building a preset's parts: the backbone (or a tiny random config of its class), the local task
(or a fixture dataset) with the training split reduced to the seeded samples, the method and the
baselines, the trainer's config (epochs -> steps, warmup steps -> ratio) and the evaluation options
(the papers' decoding; what the backbone cannot apply is noted, not silently dropped)."""
from __future__ import annotations

import dataclasses
import inspect
import math
from functools import partial
from pathlib import Path
from typing import Any

from .schema import ALL, PresetError

DATASET_OPTIONS = {  # data.* keys that each local dataset takes (besides GENERIC)
    "vqav2": ("image_root", "eval_questions", "eval_subset", "eval_seed"),
    "okvqa": ("image_root", "eval_questions", "eval_subset", "eval_seed"),
    "coco-caption": ("image_root", "annotation_file", "eval_split", "eval_subset", "eval_seed"),
    "msvd-caption": ("video_dir", "num_frames", "eval_subset", "eval_seed"),
    "msrvtt-caption": ("video_dir", "num_frames", "eval_subset", "eval_seed"),
    "msvd-qa": ("video_dir", "num_frames", "eval_subset", "eval_seed"),
    "msrvtt-qa": ("video_dir", "num_frames", "eval_subset", "eval_seed"),
}
GENERIC = ("dataset", "root", "support_size", "support_seed", "prompt_template")  # data.* keys of every dataset
PAPER_CUT_WORD = "paper"  # eval.cut_at: [paper] = the papers' answer post-processing


def metric_of(task) -> str:
    from ..evaluate.icl import task_metric

    return task_metric(task)


def world_device(spec: str) -> str:
    """``device: auto``: this process's GPU under accelerate (else cuda:0), or the CPU."""
    import torch

    if spec != "auto":
        return spec
    if not torch.cuda.is_available():
        return "cpu"
    from ..parallel import world

    return f"cuda:{world()[2] % torch.cuda.device_count()}"


def build_backbone(preset: dict, tiny: str | None, workdir: Path):
    from ..backbones import load_backbone
    from ..backbones.tiny import tiny_backbone

    b = preset["backbone"]
    if tiny:
        folder = workdir / f"tiny-{tiny}" if b["quant"] != "none" else None
        return tiny_backbone(tiny, quant=b["quant"], folder=folder)
    options = {"device_map": b["device_map"]} if b.get("device_map") else {}
    return load_backbone(b.get("path") or b["id"], quant=b["quant"], device=world_device(b["device"]), **options)


def _prepared(load, template: str | None, subset: int | None, seed: int, per_caption: bool, shuffle: bool):
    """A split loader's dataset: a seeded ``subset``; one item per caption; shuffled (the trainer takes
    its queries in order: the papers shuffle the training split with the seed); prompts templated."""
    import numpy as np

    from ..data.real import LocalDataset

    ds = load()
    if subset is not None:
        ds = ds.subset(subset, seed)
    records = ds.records
    if per_caption:  # one training item per (media, caption) pair, as the official MMICT training
        records = [dataclasses.replace(r, answers=[r.answers[i], *r.answers[:i], *r.answers[i + 1:]])
                   for r in records for i in range(len(r.answers))]
    if shuffle:
        records = [records[i] for i in np.random.default_rng(seed).permutation(len(records))]
    if template:
        records = [dataclasses.replace(r, prompt=template.format(prompt=r.prompt)) for r in records]
    return LocalDataset(ds.name, records, num_frames=ds.num_frames, layout=ds.layout)


def build_task(preset: dict, tiny: str | None, workdir: Path):
    from ..data.real import LOCAL_DATASETS, local_task

    d, t = preset["data"], preset["train"]
    name = d["dataset"]
    if name not in LOCAL_DATASETS:
        raise PresetError(f"preset {preset['name']}: data.dataset {name!r} is not a local dataset; "
                          f"known: {', '.join(LOCAL_DATASETS)}")
    allowed = DATASET_OPTIONS[name]
    for key, value in d.items():
        if key not in GENERIC and key not in allowed and value is not None:
            raise PresetError(f"preset {preset['name']}: data.{key} does not apply to {name} "
                              f"(it takes {', '.join(allowed)})")
    options = {k: d[k] for k in allowed if d.get(k) is not None}
    root = d.get("root")
    if tiny:
        from .fixtures import write_fixture

        root = str(write_fixture(name, workdir / "data" / name))
        options = {k: v for k, v in options.items()
                   if k not in ("image_root", "video_dir", "eval_questions", "annotation_file")}  # the fixture's own
    task = local_task(name, root=root, support_size=d.get("support_size"), support_seed=d["support_seed"], **options)
    samples = None if t["samples"] == ALL else t["samples"]
    wrapped: dict[int, Any] = {}
    for split, load in list(task.splits.items()):
        train = split == "train"
        key = id(load) if not train else -1
        if key not in wrapped:
            wrapped[key] = partial(_prepared, load, d.get("prompt_template"), samples if train else None,
                                   t["sample_seed"], t["per_caption"] and train, shuffle=train)
        task.splits[split] = wrapped[key]
    return task


def build_method(name: str, config: dict, backbone, where: str):
    import typing

    from ..methods import create_method, get_method

    cls = get_method(name)
    hints = typing.get_type_hints(cls.config_class)
    cfg = {}
    for k, v in (config or {}).items():
        if hints.get(k) is float and isinstance(v, (int, str)) and not isinstance(v, bool):
            try:
                v = float(v)
            except ValueError:
                raise PresetError(f"{where}.{k} must be a number; got {v!r}") from None
        cfg[k] = v
    try:
        cls.config_class.from_dict(cfg)  # bad settings: a message naming the preset's field
    except ValueError as exc:
        raise PresetError(f"{where}: {exc}") from None
    try:
        return create_method(name, backbone, **cfg)
    except TypeError as exc:  # e.g. MMICT on a backbone without a text-reading Q-Former
        raise PresetError(f"method {name!r} cannot run on {getattr(backbone, 'name', 'this backbone')}: {exc}") from None


def train_config(preset: dict, task):
    from ..train import TrainConfig

    t = preset["train"]
    for key in ("epochs", "batch_size", "grad_accum"):
        if t[key] < 1:
            raise PresetError(f"preset {preset['name']}: train.{key} must be >= 1; got {t[key]}")
    samples = len(task.dataset("train"))  # the seeded subset (or the whole split with samples: all)
    batch = t["batch_size"] * t["grad_accum"]
    steps = max(1, math.ceil(samples * t["epochs"] / batch))
    if t.get("max_steps"):
        steps = min(steps, t["max_steps"])
    if t.get("warmup_steps") is not None:
        warmup = min(1.0, t["warmup_steps"] / steps)
    else:
        warmup = t["warmup_ratio"] if t.get("warmup_ratio") is not None else 0.1
    try:
        return TrainConfig(task=task, samples=samples, steps=steps, batch_size=batch, lr=t["lr"], warmup_ratio=warmup,
                           min_lr_ratio=t["min_lr_ratio"], weight_decay=t["weight_decay"], clip=t["clip"],
                           loss_on=t["loss_on"], seed=t["seed"])
    except ValueError as exc:
        raise PresetError(f"preset {preset['name']}: train: {exc}") from None


def eval_options(preset: dict, method) -> tuple[dict, list[str]]:
    """evaluate_generation's options from the preset's protocol, and notes on what cannot be applied."""
    from ..evaluate.icl import PAPER_CUTS

    e, notes = preset["eval"], []
    for key in ("batch_size", "num_beams", "max_new_tokens"):
        if e[key] < 1:
            raise PresetError(f"preset {preset['name']}: eval.{key} must be >= 1; got {e[key]}")
    cuts = [c for c in e["cut_at"] if c != PAPER_CUT_WORD]
    if PAPER_CUT_WORD in e["cut_at"]:
        cuts += list(PAPER_CUTS)
    accepted = inspect.signature(method.generate).parameters
    gen = {}
    for key in ("num_beams", "min_new_tokens", "length_penalty"):
        value = e.get(key)
        if value is None or (key == "num_beams" and value == 1):
            continue
        if key in accepted:
            gen[key] = value
        else:
            notes.append(f"eval.{key}={value} is part of the papers' decoding but the backbone's generate() does not "
                         f"take it: not applied")
    return {"seed": e["seed"], "batch_size": e["batch_size"], "split": e["split"], "selection": e["selection"],
            "max_new_tokens": e["max_new_tokens"], "generate_kwargs": gen, "cut_at": tuple(cuts)}, notes
