"""4. Data efficiency (accuracy vs training samples) and shot scaling (accuracy vs demonstrations
for ICL and for M2IV's many-shot teacher, past what one context holds).

The training runs are independent, so they are spread over ``settings.jobs`` worker processes
(one torch thread each); the timing sections never run beside them.
"""
from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch

_BB = None  # the worker's backbone (loaded once per process)


def _backbone():
    global _BB
    if _BB is None:
        from mmict_core.backbones import TeachingVLM

        _BB = TeachingVLM.load(None)
    return _BB


def _init_worker(threads: int) -> None:
    import logging
    import warnings

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from transformers.utils import logging as tlog

    tlog.set_verbosity_error()
    tlog.disable_progress_bar()


def _settings_obj(d: dict):
    from .settings import Settings

    return Settings(**d)


def context_tokens(backbone, settings, k: int) -> int:
    """LM tokens of a k-shot plain-ICL query input (counted from its segments; nothing is run)."""
    from .common import episode

    ep = episode(settings, k, index=0)
    with torch.no_grad():
        return sum(len(s) for s in backbone.episode_segments(ep, with_answer=False))


def run_job(job: dict, settings_dict: dict) -> dict:
    """One unit of work (runs in a worker process or in-process)."""
    from mmict_core.evaluate.icl import evaluate_generation
    from mmict_core.methods import create_method
    from mmict_core.train import TrainConfig, train

    from .common import task_options

    s = _settings_obj(settings_dict)
    bb = _backbone()
    opts = task_options(s)
    t0, c0 = time.perf_counter(), time.process_time()
    if job["kind"] == "icl":
        out = []
        for k in job["shots"]:
            tokens = context_tokens(bb, s, k)
            row = {"shots": k, "tokens": tokens, "fits": bb.context_length is None or tokens <= bb.context_length}
            if row["fits"]:
                r = evaluate_generation(bb.generate, s.task, [k], episodes=s.eval_episodes, seed=s.seed, progress=False,
                                        task_options=opts)[0]
                row["accuracy"] = r.accuracy
            else:
                row["accuracy"] = None
            out.append(row)
        return {"job": job, "rows": out, "seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
    m = create_method(job["method"], bb, **job["overrides"])
    cfg = TrainConfig(task=s.task, fixed_binding=bool(opts), samples=job["samples"], steps=job["steps"],
                      batch_size=job["batch"], seed=s.seed)
    res = train(m, cfg, progress=False)
    t1 = time.perf_counter()
    r = evaluate_generation(m.generate, s.task, [0], episodes=s.eval_episodes, seed=s.seed, progress=False,
                            task_options=opts)[0]
    losses = res.losses
    tail = losses[-max(1, len(losses) // 10):]
    return {"job": job, "accuracy": r.accuracy, "train_s": t1 - t0, "eval_s": time.perf_counter() - t1,
            "final_loss": sum(tail) / len(tail), "first_loss": losses[0] if losses else None,
            "train_shots": int(m.config.train_shots), "seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}


def _key(job: dict) -> tuple:
    return (job["kind"], job.get("method"), job.get("samples"), tuple(sorted(job.get("overrides", {}).items())))


def plan(settings) -> list[dict]:
    """Every job of the section, duplicates merged (M2IV's default run is shared by both curves)."""
    from mmict_core.methods.m2iv import M2IVConfig

    jobs = [{"kind": "icl", "shots": list(settings.shot_icl)}]
    for name in settings.data_methods:
        for n in settings.data_samples:
            jobs.append({"kind": "train", "method": name, "samples": n, "steps": settings.data_steps,
                         "batch": settings.data_batch, "overrides": {}})
    default = M2IVConfig()
    for k, sets in settings.shot_m2iv:
        over = {} if (k, sets) == (default.train_shots, default.teacher_sets) else {"train_shots": k, "teacher_sets": sets}
        jobs.append({"kind": "train", "method": "m2iv", "samples": settings.shot_samples, "steps": settings.data_steps,
                     "batch": settings.data_batch, "overrides": over})
    seen, out = set(), []
    for j in jobs:
        if _key(j) not in seen:
            seen.add(_key(j))
            out.append(j)
    return out


def _cost(job: dict) -> float:
    """Rough relative cost, to start the longest jobs first."""
    if job["kind"] == "icl":
        return 5.0 * len(job["shots"])
    shots = job["overrides"].get("train_shots", {"m2iv": 8, "mimic": 4}.get(job["method"], 0))
    return job["steps"] * (1.0 + shots / 8.0) * {"m2iv": 2.0, "mimic": 1.5}.get(job["method"], 1.0)


def execute(settings, jobs: list[dict]) -> list[dict]:
    sd = settings.as_dict()
    order = sorted(jobs, key=_cost, reverse=True)
    if settings.jobs <= 1:
        return [run_job(j, sd) for j in order]
    with ProcessPoolExecutor(max_workers=settings.jobs, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(settings.threads,)) as pool:
        futures = [pool.submit(run_job, j, sd) for j in order]
        return [f.result() for f in futures]


def run(settings) -> dict:
    from mmict_core.methods.m2iv import M2IVConfig

    t0 = time.perf_counter()
    results = execute(settings, plan(settings))
    icl = next(r for r in results if r["job"]["kind"] == "icl")["rows"]
    trains = [r for r in results if r["job"]["kind"] == "train"]
    data_rows = []
    for name in settings.data_methods:
        for n in settings.data_samples:
            r = next(r for r in trains if r["job"]["method"] == name and r["job"]["samples"] == n and not r["job"]["overrides"])
            data_rows.append({"method": name, "samples": n, "accuracy": r["accuracy"], "train_s": r["train_s"], "cpu_s": r["cpu_s"],
                              "first_loss": r["first_loss"], "final_loss": r["final_loss"], "train_shots": r["train_shots"]})
    default = M2IVConfig()
    context = _backbone().context_length
    m2iv_rows = []
    for k, sets in settings.shot_m2iv:
        over = {} if (k, sets) == (default.train_shots, default.teacher_sets) else {"train_shots": k, "teacher_sets": sets}
        r = next(r for r in trains if r["job"]["method"] == "m2iv" and r["job"]["samples"] == settings.shot_samples
                 and r["job"]["overrides"] == over)
        per = k // sets
        per_tokens = context_tokens(_backbone(), settings, per)
        all_tokens = context_tokens(_backbone(), settings, k)
        m2iv_rows.append({"train_shots": k, "teacher_sets": sets, "demos_per_context": per,
                          "tokens_per_context": per_tokens, "tokens_if_one_context": all_tokens,
                          "fits_one_context": context is None or all_tokens <= context,
                          "accuracy": r["accuracy"], "train_s": r["train_s"], "final_loss": r["final_loss"]})
    from .common import task_of

    task = task_of(settings)
    chance = float(task.chance)  # ICL: uniform among the words its demos show
    fixed_map = getattr(task, "fixed_map", None) if settings.fixed_binding else None
    chance_0 = 1.0 / len(fixed_map) if fixed_map else chance  # 0 demos: one of every bound word
    return {
        "task": settings.task, "fixed_binding": settings.fixed_binding, "chance": chance, "chance_0_demos": chance_0,
        "context_length": context, "cpu_s": sum(r["cpu_s"] for r in results),
        "steps": settings.data_steps, "batch": settings.data_batch, "eval_episodes": settings.eval_episodes,
        "data": data_rows, "icl": icl, "m2iv_shots": m2iv_rows, "jobs": settings.jobs,
        "wall_s": time.perf_counter() - t0,
        "notes": [
            f"Task {settings.task}{' with --fixed-binding (one colour -> nonsense-word binding for train and test)' if settings.fixed_binding else ''}; "
            f"accuracy = exact match on the same {settings.eval_episodes} held-out test episodes for every run (seed {settings.seed}). "
            f"Chance: {chance:.3f} for ICL (uniform among the words its demos show), {chance_0:.3f} for a 0-demo adapter "
            f"(one of every bound word).",
            f"Every training run: {settings.data_steps} steps x batch {settings.data_batch}, TrainConfig defaults otherwise "
            f"(AdamW lr 5e-3, 10% warmup, cosine, answer-only loss); 'samples' = distinct training queries cycled through; "
            f"methods at their default configs (MimIC teacher 4 shots, M2IV teacher 8 shots).",
            f"M2IV shot scaling: train_shots demos split into teacher_sets disjoint contexts whose teacher outputs are "
            f"averaged (samples {settings.shot_samples}); rows marked 'no' do not fit one {context}-token context as plain ICL.",
            "ICL rows past the context are not run (the input does not fit); their token count is shown.",
            f"Training runs spread over {settings.jobs} worker process(es), 1 torch thread each; untrained adapters are "
            f"not part of this section.",
        ],
    }
