"""The MMICT paper's case study (its Figure 3), live: one query of a case-study task through
VanillaFT, VanillaICT and MMICT (and any other method), beside each method's accuracy over N
held-out episodes with a 95% interval — so one lucky query is never the only evidence.

The trained adapters come from the **starter library** shipped with the teaching VLM
(``assets/teaching-vlm/library``), built by :func:`build_starter_library`
(``bash scripts/build_starter_library.sh``); plain ICL needs none.  Used by ``mmict case-study``,
the workbench (app, widgets) and the notebooks.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import paths
from .data import Episode, get_task, make_episode
from .evaluate.exact_match import exact_match
from .evaluate.claims import wilson_interval  # noqa: F401  (re-exported: the case study's interval)
from .evaluate.icl import evaluate_generation

# case-study type -> task (the four types of the MMICT paper's Figure 3, plus per-episode binding)
CASE_TASKS = {"vqa": "ft-vqa", "caption": "ft-caption", "video-qa": "ft-video-qa", "video-caption": "ft-video-caption",
              "binding": "binding"}
CASE_METHODS = ("vanilla-ft", "vanilla-ict", "mmict")
DEFAULT_SHOTS = 4
STARTER_DIR = paths.STARTER_DIR  # beside the default teaching VLM (mmict_core.paths)


def resolve_task(task: str) -> str:
    """A case-study type ('vqa', 'video-qa', ...) or a task name -> the task name."""
    return CASE_TASKS.get(task, task)


def entry_name(task: str, method: str, fixed_binding: bool = False) -> str:
    """The starter library's entry for ``method`` trained on ``task``: 'ft-vqa.mmict', 'binding-fixed.hificl'."""
    return f"{task}{'-fixed' if fixed_binding else ''}.{method}"


def starter_library(root: str | Path | None = None):
    """The starter library: ``root``, else $MMICT_STARTER_LIBRARY, else the one shipped in assets/.
    Front ends see it through :class:`~mmict_core.vlibrary.view.LibraryView`, which never writes to it."""
    import os

    from .vlibrary import VLibrary

    return VLibrary(root or os.environ.get("MMICT_STARTER_LIBRARY") or STARTER_DIR)


def method_for(backbone, method: str, task: str, *, shots: int = DEFAULT_SHOTS, library=None, fixed_binding: bool = False):
    """``icl`` (with ``shots`` demos) or the starter library's adapter of ``method`` for ``task``,
    at ``shots`` demonstrations where the method reads demonstrations."""
    from .methods import create_method, get_method

    cls = get_method(method)
    if not cls.needs_training:
        return create_method(method, backbone, shots=shots)
    lib = library or starter_library()
    name = entry_name(task, method, fixed_binding)
    m = lib.load(name, backbone)
    if m.uses_demos:
        m.config.shots = shots
    return m


@dataclass
class CaseStudy:
    task: str
    query: dict
    rows: list[dict] = field(default_factory=list)
    accuracy: list[dict] = field(default_factory=list)
    episode: Episode | None = None

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("episode")
        return d


def query_card(episode: Episode) -> dict:
    q = episode.query
    return {"prompt": q.prompt, "answer": q.answer, "frames": len(q.images), "shots": episode.k,
            "demos": [{"prompt": d.prompt, "answer": d.answer, "frames": len(d.images)} for d in episode.demos],
            "naming": episode.info.get("naming")}


def run_case_study(backbone, task: str, methods: Sequence[str] = CASE_METHODS, *, shots: int = DEFAULT_SHOTS,
                   episodes: int = 50, seed: int = 0, index: int = 0, episode: Episode | None = None, library=None,
                   fixed_binding: bool = False, progress: bool = False,
                   callback: Callable[[float, str], None] | None = None) -> CaseStudy:
    """One query (test episode ``index``, or the given ``episode``) through every method, and each
    method's accuracy over ``episodes`` held-out test episodes (seed ``seed``) with a 95% Wilson
    interval.  Methods that read demonstrations see the same ``shots`` demonstrations."""
    task = resolve_task(task)
    t = get_task(task, **({"fixed_binding": True} if fixed_binding and task == "binding" else {}))
    ep = episode or make_episode(t, shots, seed=seed, index=index, split="test")
    case = CaseStudy(task=task, query=query_card(ep), episode=ep)
    for j, name in enumerate(methods):
        m = method_for(backbone, name, task, shots=shots, library=library, fixed_binding=fixed_binding)
        k = shots if m.uses_demos else 0
        view = Episode(demos=list(ep.demos)[:k], query=ep.query, task=ep.task, info=ep.info)
        m.generate([view], max_new_tokens=t.max_new_tokens)  # warm-up: a method's first call pays one-off costs
        t0 = time.perf_counter()
        out = m.generate([view], max_new_tokens=t.max_new_tokens)[0]  # (greedy, eval mode: the same output)
        ms = 1000 * (time.perf_counter() - t0)
        case.rows.append({"method": name, "shots": k, "output": out, "correct": bool(exact_match(out, ep.query.answers)),
                          "latency_ms": round(ms, 1)})
        res = evaluate_generation(m.generate, t, [k], episodes=episodes, seed=seed, progress=progress)[0]
        lo, hi = wilson_interval(res.accuracy * res.n, res.n)
        case.accuracy.append({"method": name, "shots": k, "accuracy": round(res.accuracy, 4), "n": res.n,
                              "ci95": [round(lo, 4), round(hi, 4)],
                              **{key: round(v, 4) for key, v in res.extra.items()}})
        if callback:
            callback((j + 1) / len(methods), name)
    return case


def query_picture(episode: Episode) -> np.ndarray:
    """The query's image, or its frames side by side (1 px gaps) for a clip."""
    frames = episode.query.images
    if len(frames) == 1:
        return frames[0]
    h = frames[0].shape[0]
    gap = np.full((h, 1, 3), 255, dtype=np.uint8)
    parts = [x for f in frames for x in (f, gap)][:-1]
    return np.concatenate(parts, axis=1)


def _card_args(case: CaseStudy, title: str | None = None) -> tuple:
    ep = case.episode
    demos = [(query_picture(Episode([], d, d.task)), d.prompt, d.answer) for d in ep.demos]
    title = title or f"Case study: {case.task} ({case.query['shots']} demonstrations)"
    return query_picture(ep), ep.query.prompt, ep.query.answer, case.rows, demos, title


def case_study_card_html(case: CaseStudy, title: str | None = None) -> str:
    """The Figure-3-style card with the accuracy table, as one self-contained HTML document."""
    from .viz.case_study import case_study_html

    return case_study_html(*_card_args(case, title), accuracy=case.accuracy)


def save_case_study_files(case: CaseStudy, png: str | Path | None = None, html: str | Path | None = None,
                          title: str | None = None) -> None:
    """The Figure-3-style card with the accuracy table, as PNG and/or self-contained HTML."""
    from .viz.case_study import case_study_png

    if png:
        Path(png).parent.mkdir(parents=True, exist_ok=True)
        case_study_png(*_card_args(case, title), accuracy=case.accuracy).save(png, format="PNG")
    if html:
        Path(html).parent.mkdir(parents=True, exist_ok=True)
        Path(html).write_text(case_study_card_html(case, title), encoding="utf-8")


def missing_entries(task: str, methods: Sequence[str], library=None, fixed_binding: bool = False) -> list[str]:
    """The starter-library entries ``methods`` need for ``task`` that the library does not hold."""
    from .methods import get_method

    lib = library or starter_library()
    have = {e["name"] for e in lib.list()}
    task = resolve_task(task)
    return [entry_name(task, m, fixed_binding) for m in methods
            if get_method(m).needs_training and entry_name(task, m, fixed_binding) not in have]


# ------------------------------------------------------------------------------------------------
# the starter library


@dataclass(frozen=True)
class StarterEntry:
    task: str
    method: str
    fixed_binding: bool = False

    @property
    def name(self) -> str:
        return entry_name(self.task, self.method, self.fixed_binding)


# one training budget per method family, the same on every task (never tuned per task)
STARTER_TRAIN = {
    # vanilla-ft, vanilla-ict, mmict (lr x their lr_scale 0.1 = 1e-3 on the M-Hub).  Was 600 steps at lr 1e-3:
    # VanillaFT learned neither downstream task at that budget (docs/tasks/downstream.md, 2026-12-06)
    "hub": dict(steps=3000, lr=1e-2, batch_size=8, samples=1000),
    "adapter": dict(steps=2000, lr=5e-3, batch_size=8, samples=1000),  # hificl, mimic, live, m2iv, lora
}
HUB_METHODS = ("vanilla-ft", "vanilla-ict", "mmict")
ADAPTER_METHODS = ("hificl", "mimic", "live", "m2iv", "lora")
STARTER_ENTRIES = tuple(
    [StarterEntry(t, m) for t in ("ft-vqa", "ft-caption", "ft-video-qa", "ft-video-caption", "binding") for m in HUB_METHODS]
    + [StarterEntry("binding", m, fixed_binding=True) for m in ADAPTER_METHODS]
    + [StarterEntry("ft-vqa", m) for m in ADAPTER_METHODS])


def starter_train_config(entry: StarterEntry, seed: int = 0):
    from .train import TrainConfig

    budget = STARTER_TRAIN["hub" if entry.method in HUB_METHODS else "adapter"]
    extra = {"mix_fixed": 0.5} if entry.fixed_binding else {}
    return TrainConfig(task=entry.task, fixed_binding=entry.fixed_binding, seed=seed, **budget, **extra)


def train_command(entry: StarterEntry, seed: int) -> str:
    tc = starter_train_config(entry, seed)
    from .methods import get_method

    cmd = (f"mmict train --method {entry.method} --task {entry.task} --steps {tc.steps} --lr {tc.lr:g} "
           f"--batch-size {tc.batch_size} --samples {tc.samples} --seed {seed}")
    if get_method(entry.method).uses_demos:
        cmd += f" --shots {DEFAULT_SHOTS} --train-shots {DEFAULT_SHOTS}"
    if entry.fixed_binding:
        cmd += f" --fixed-binding --mix-fixed {tc.mix_fixed:g}"
    return cmd


def build_starter_library(out: str | Path = STARTER_DIR, *, seed: int = 0, only: Sequence[str] | None = None,
                          episodes: int = 100, backbone=None, progress: bool = True) -> list[dict]:
    """Train every :data:`STARTER_ENTRIES` adapter on the teaching VLM from ``seed``, measure it on
    ``episodes`` held-out test episodes, and store it in the library at ``out`` with its command,
    steps, train seconds and accuracy (+ 95% interval).  ``only``: entry names to (re)build."""
    from .backbones import load_backbone
    from .methods import create_method, get_method
    from .train import train
    from .vlibrary import VLibrary

    bb = backbone or load_backbone("teaching")
    lib = VLibrary(out)
    report = []
    for entry in STARTER_ENTRIES:
        if only and entry.name not in only:
            continue
        cls = get_method(entry.method)
        shots = DEFAULT_SHOTS if cls.uses_demos else 0
        cfg_kw = {"seed": seed}
        if cls.uses_demos:
            cfg_kw.update(shots=shots, train_shots=shots)
        method = create_method(entry.method, bb, **cfg_kw)
        tc = starter_train_config(entry, seed)
        res = train(method, tc, progress=progress)
        t = get_task(entry.task, **({"fixed_binding": True} if entry.fixed_binding else {}))
        ev = evaluate_generation(method.generate, t, [shots], episodes=episodes, seed=seed, progress=False)[0]
        lo, hi = wilson_interval(ev.accuracy * ev.n, ev.n)
        metrics = {"accuracy": round(ev.accuracy, 4), "ci95_lo": round(lo, 4), "ci95_hi": round(hi, 4), "episodes": ev.n,
                   "steps": tc.steps, "train_seconds": round(res.seconds, 3), "final_loss": round(res.losses[-1], 4),
                   **{k: round(v, 4) for k, v in ev.extra.items()}}
        lib.add(entry.name, method, task=entry.task, shots=shots, samples=tc.samples, metrics=metrics, overwrite=True,
                description=f"{entry.method} on {entry.task}{' (fixed binding)' if entry.fixed_binding else ''}; "
                            f"built by: {train_command(entry, seed)}")
        report.append({"name": entry.name, **metrics})
        if progress:
            print(json.dumps(report[-1]), flush=True)
    return report
