"""A preset's pipeline: backbone, task, method and baselines, trainer settings, evaluation protocol.

:func:`build_pipeline` makes every part (``tiny=KIND``: a tiny random config of the class and a
fixture dataset instead of the checkpoint and the data); :meth:`Pipeline.check` reads one training
batch and one evaluation episode per evaluated method and assembles them (the dry run);
:meth:`Pipeline.run` trains, evaluates the method and the baselines with the papers' decoding and
puts the papers' numbers next to the measured ones.  Under ``accelerate launch`` / ``torchrun`` with
several processes the shared trainer makes every process train on its share of each batch
(:mod:`mmict_core.parallel`); the main process saves the adapters and evaluates.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .build import build_backbone, build_method, build_task, eval_options, metric_of, train_config
from ..parallel import main_first, world
from .schema import ALL, PresetError


@dataclass
class Pipeline:
    preset: dict
    backbone: Any
    task: Any
    method: Any
    baselines: list = field(default_factory=list)  # (label, method), e.g. ("icl:8", ICL)
    train_config: Any = None  # None when nothing trains
    eval_options: dict = field(default_factory=dict)  # evaluate_generation's keyword arguments
    episodes: int = 0
    notes: list[str] = field(default_factory=list)  # deviations from the preset that could not be avoided
    out_dir: Path | None = None

    def evaluated(self) -> list[tuple[str, Any]]:
        return [(self.method.name, self.method)] + list(self.baselines)

    def check(self) -> dict:
        """The dry run: read one training batch and one evaluation episode per evaluated method and
        assemble them (no forward pass), so data, layout and context length are all exercised."""
        import torch

        from ..data import make_episode
        from ..train import training_batch

        with torch.no_grad():
            if self.train_config is not None:
                self.method.batch(training_batch(self.method, self.train_config, 0), with_answer=True)
            for _, m in self.evaluated():
                k = self._pool_for(m)
                opts = self.eval_options
                ep = make_episode(self.task, k, seed=opts["seed"], index=0, split=opts["split"])
                m.batch([ep], with_answer=False, padding_side="left")
        return self.summary()

    def summary(self) -> dict:
        tc, m = self.train_config, self.method
        describe = getattr(self.backbone, "describe", lambda: {"name": getattr(self.backbone, "name", "?")})
        return {
            "preset": self.preset["name"], "backbone": describe(), "dataset": self.preset["data"]["dataset"],
            "metric": metric_of(self.task),
            "method": {"name": m.name, "config": m.config.to_dict(),
                       "trainable_params": m.num_trainable() if m.needs_training else 0},
            "train": None if tc is None else {"samples": tc.samples, "steps": tc.steps, "batch_size": tc.batch_size,
                                              "lr": tc.lr, "warmup_ratio": round(tc.warmup_ratio, 4)},
            "eval": {"episodes": self.episodes, **self.eval_options},
            "evaluated": [f"{label} ({shots_of(b)}-shot)" for label, b in self.evaluated()],
            "notes": self.notes,
        }

    def run(self, progress: bool = True, log=print) -> dict | None:
        """Train what trains, evaluate the method and the baselines, compare with the papers.
        Returns the results on the main process (None on the others)."""
        trained = self._train(progress)
        if world()[0] != 0:  # the main process evaluates; the others are done
            return None
        rows = []
        for label, m in self.evaluated():
            k = self._pool_for(m)
            log(f"evaluating {label} ({k}-shot) on {self.episodes} {self.task.name} queries ...")
            r = evaluate(m, self.task, k, self.episodes, self.eval_options, progress)
            rows.append({"method": m.name, "label": label, "shots": k, "metric": r.metric, "score": r.accuracy,
                         "n": r.n, "seconds": round(r.seconds, 1), "examples": r.predictions,
                         "train": trained.get(label)})
        results = {"preset": self.preset["name"], "summary": self.summary(),
                   "comparison": compare_with_paper(rows, self.preset.get("reference", {})), "rows": rows}
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "results.json").write_text(json.dumps(results, indent=2))
        return results

    def _train(self, progress: bool) -> dict:
        from ..train import train

        rank, trained = world()[0], {}
        for label, m in self.evaluated():
            if not m.needs_training:
                continue
            res = train(m, self.train_config, progress=progress)  # shares each batch over the processes
            trained[label] = {"steps": res.steps, "seconds": round(res.seconds, 1),
                              "loss_first": res.losses[0], "loss_last": res.losses[-1]}
            if rank == 0 and self.out_dir is not None:
                folder = self.out_dir / f"adapter-{label.replace(':', '-')}"
                m.save(folder, metadata={"preset": self.preset["name"], **trained[label]})
        return trained

    def _pool_for(self, method) -> int:
        """``method``'s shot count; the task's demo pool is cut to it (every pool item is decoded)."""
        k = shots_of(method)
        self.task.default_pool_size = max(k, 1)
        return k


def shots_of(method) -> int:
    return int(method.config.shots) if method.uses_demos else 0


def evaluate(method, task, k: int, episodes: int, options: dict, progress: bool):
    from ..evaluate.icl import evaluate_generation

    return evaluate_generation(method.generate, task, [k], episodes=episodes, progress=progress,
                               keep_predictions=10, **options)[0]


def compare_with_paper(rows: list[dict], reference: dict) -> list[dict]:
    """Measured (in the papers' unit) next to the papers' number for each evaluated (method, shots)."""
    scale = float(reference.get("scale", 100.0))
    refs = {(r["method"], r["shots"]): r for r in reference.get("rows", [])}
    out = []
    for row in rows:
        ref = refs.get((row["method"], row["shots"])) or {}
        measured = round(row["score"] * scale, 2)
        paper = ref.get("value")
        out.append({"method": row.get("label", row["method"]), "shots": row["shots"], "metric": row["metric"],
                    "measured": measured, "paper": paper,
                    "delta": None if paper is None else round(measured - paper, 2),
                    "status": ref.get("status", "no reference"), "source": ref.get("source", "")})
    return out


def _baselines(preset: dict, backbone) -> list[tuple[str, Any]]:
    out = []
    for i, b in enumerate(preset.get("baselines", [])):
        config = dict(b.get("config") or {})
        if b.get("shots") is not None:
            config["shots"] = b["shots"]
        label = b["method"] if b.get("shots") is None else f"{b['method']}:{b['shots']}"
        out.append((label, build_method(b["method"], config, backbone, f"baselines[{i}]")))
    return out


def build_pipeline(preset: dict, tiny: str | None = None, out_dir: str | os.PathLike | None = None) -> Pipeline:
    """Every part of ``preset``'s run (nothing trained yet).  ``tiny``: a tiny random
    ``*ForConditionalGeneration`` of that kind (:data:`~mmict_core.backbones.tiny.TINY_KINDS`) and a
    fixture dataset, both written under ``out_dir`` (a new temporary folder when None)."""
    name = preset["name"]
    out = Path(out_dir) if out_dir is not None else None
    workdir = out or (Path(tempfile.mkdtemp(prefix="mmict-preset-")) if tiny else Path("."))
    with main_first():  # fixture files and the tiny checkpoint are written once
        task = build_task(preset, tiny, workdir)  # first: a missing data root fails before a long model load
        backbone = build_backbone(preset, tiny, workdir)
    method = build_method(preset["method"]["name"], preset["method"].get("config"), backbone, "method.config")
    baselines = _baselines(preset, backbone)
    trains = method.needs_training or any(b.needs_training for _, b in baselines)
    tcfg = train_config(preset, task) if trains else None
    options, notes = eval_options(preset, method)
    if trains and preset["train"]["grad_accum"] > 1:
        notes.append(f"the trainer has no gradient accumulation: each step takes batch_size x grad_accum = "
                     f"{tcfg.batch_size} episodes at once (the same update, more memory)")
    ref_metric = preset.get("reference", {}).get("metric")
    if ref_metric and ref_metric != metric_of(task):
        raise PresetError(f"preset {name}: reference.metric is {ref_metric!r} but {task.name} is scored by "
                          f"{metric_of(task)!r}")
    e = preset["eval"]
    episodes = len(task.dataset(e["split"])) if e["episodes"] == ALL else e["episodes"]
    if episodes < 1:
        raise PresetError(f"preset {name}: eval.episodes must be >= 1 (or all); got {episodes}")
    return Pipeline(preset, backbone, task, method, baselines, tcfg, options, episodes, notes, out)


def run_preset(preset: dict, *, tiny: str | None = None, out_dir=None, dry_run: bool = False, progress: bool = True,
               log=print) -> dict | None:
    """Build ``preset``'s pipeline; check it (``dry_run``) or run it.  Returns the summary / the results."""
    with contextlib.ExitStack() as stack:
        if out_dir is None and tiny:  # fixtures and the tiny checkpoint go to a folder removed afterwards
            out_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="mmict-preset-"))
        t0 = time.time()
        pipe = build_pipeline(preset, tiny=tiny, out_dir=out_dir)
        log(f"built {preset['name']} in {time.time() - t0:.1f}s")
        return pipe.check() if dry_run else pipe.run(progress=progress, log=log)
