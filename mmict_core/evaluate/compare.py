"""Compare methods on the same held-out episodes: accuracy, trainable parameters, train time,
inference time per query — training (or reusing) whatever is not trained yet."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..methods import Method, create_method, get_method
from ..methods.base import read_adapter
from ..parallel import world
from ..train import TrainConfig, train
from .icl import evaluate_generation


@dataclass
class MethodSpec:
    """``name[:shots]`` plus config overrides, e.g. ``icl:8`` or ``hificl`` with {"rank": 4}."""

    name: str
    shots: int | None = None
    overrides: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        base = self.name if self.shots is None else f"{self.name}:{self.shots}"
        return base + "".join(f"@{k}={v}" for k, v in self.overrides.items())


def parse_method_specs(text: str) -> list[MethodSpec]:
    """``"icl:8,hificl,task-vector:5@layer=2"``: comma-separated ``name[:shots][@FIELD=VALUE...]``."""
    specs = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        head, *settings = part.split("@")
        name, _, shots = head.partition(":")
        cls = get_method(name)  # unknown names fail here, before any work
        try:
            overrides = coerce_overrides(cls.config_class, settings)
        except ValueError as e:
            raise ValueError(f"in {part!r}: {e}") from None
        if shots:
            if not shots.isdigit():
                raise ValueError(f"in {part!r}: shots must be a whole number >= 0 (e.g. icl:8)")
            specs.append(MethodSpec(name, int(shots), overrides))
        else:
            specs.append(MethodSpec(name, None, overrides))
    if not specs:
        raise ValueError("no methods given; e.g. --methods icl:8,hificl")
    return specs


def coerce_overrides(config_cls, pairs: Sequence[str]) -> dict:
    """``["rank=4", "z2=faithful"]`` -> typed values for ``config_cls``'s fields."""
    hints = typing.get_type_hints(config_cls)
    out = {}
    for pair in pairs:
        key, sep, val = pair.partition("=")
        if not sep or key not in hints:
            raise ValueError(f"bad setting {pair!r}: use FIELD=VALUE with FIELD one of {sorted(hints)}")
        typ = hints[key]
        if typ is bool:
            if val.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"{key} takes true or false, got {val!r}")
            out[key] = val.lower() in ("true", "1")
        elif typ in (int, float):
            try:
                out[key] = typ(val)
            except ValueError:
                raise ValueError(f"{key} takes a {typ.__name__}, got {val!r}") from None
        else:
            out[key] = val
    return out


def build_method(backbone, spec: MethodSpec) -> Method:
    kwargs = dict(spec.overrides)
    if spec.shots is not None:
        kwargs["shots"] = spec.shots
    return create_method(spec.name, backbone, **kwargs)


def cache_key(method: Method, tcfg: TrainConfig) -> str:
    blob = json.dumps({"method": method.name, "config": method.config.to_dict(), "train": dataclasses.asdict(tcfg),
                       "backbone": method.backbone.fingerprint()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_or_load(method: Method, tcfg: TrainConfig, cache_dir: Path | None, progress: bool = True,
                  callback: Callable | None = None) -> tuple[Method, float, bool]:
    """(trained method, train seconds, reused?) — reuses an identical earlier run from ``cache_dir``."""
    if not method.needs_training:
        return method, 0.0, False
    if cache_dir is not None:
        folder = Path(cache_dir) / f"{method.name}-{cache_key(method, tcfg)}"
        if (folder / "adapter_config.json").is_file():
            meta, _ = read_adapter(folder)
            return type(method).load(folder, method.backbone), float(meta["metadata"].get("train_seconds", 0.0)), True
    res = train(method, tcfg, progress=progress, callback=callback)
    if cache_dir is not None and world().main:  # data-parallel: every process holds the same adapter; one writes it
        method.save(folder, metadata={"train_seconds": res.seconds, "train": dataclasses.asdict(tcfg),
                                      "final_loss": res.losses[-1] if res.losses else None})
    return method, res.seconds, False


def compare(backbone, task: str, specs: Sequence[MethodSpec], *, episodes: int = 300, seed: int = 0,
            train_cfg: TrainConfig | None = None, cache_dir: str | Path | None = None, also_on: Sequence[str] = (),
            fixed_binding: bool = False, progress: bool = True) -> list[dict]:
    """One row per method, all evaluated on the same held-out episodes of ``task``.  Launched with
    several processes, they share each training batch and only the main process evaluates, writes
    the cache and gets rows (the others get ``[]``)."""
    tcfg = train_cfg or TrainConfig(task=task, fixed_binding=fixed_binding)
    if tcfg.task != task:
        raise ValueError(f"train config task {tcfg.task!r} differs from the compared task {task!r}")
    task_options = {"fixed_binding": True} if fixed_binding and task == "binding" else {}
    w = world()
    rows = []
    for spec in specs:
        method = build_method(backbone, spec)
        method, train_s, reused = train_or_load(method, tcfg, Path(cache_dir) if cache_dir else None, progress)
        if not w.main:  # data-parallel: training was shared; the main process evaluates and reports
            continue
        k = method.config.shots if method.uses_demos else 0
        res = evaluate_generation(method.generate, task, [k], episodes=episodes, seed=seed, progress=progress,
                                  task_options=task_options)[0]
        row = {"method": spec.label, "shots": k,
               "accuracy": round(res.accuracy, 4), "trainable_params": method.num_trainable() if method.needs_training else 0,
               "train_seconds": round(train_s, 1), "infer_ms": round(1000 * res.seconds / res.n, 2), "reused": reused}
        for other in also_on:
            o = evaluate_generation(method.generate, other, [k], episodes=min(episodes, 100), seed=seed, progress=False)[0]
            row[f"acc_{other}"] = round(o.accuracy, 4)
        rows.append(row)
    return rows
