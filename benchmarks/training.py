"""2. Training: time, FLOPs, peak memory and trainable parameters per optimiser step for every
trainable method on the same task and queries; ratios to HiFICL."""
from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from mmict_core.methods import get_method, method_names
from mmict_core.train import TrainConfig, _param_groups, training_batch

from .common import fresh_method
from .stats import peak_rss_delta, ratio, round_robin, summarize

REFERENCE = "hificl"


def trainable_names() -> list[str]:
    return [n for n in method_names() if get_method(n).needs_training]


def run(backbone, settings) -> dict:
    cfg = TrainConfig(task=settings.task, fixed_binding=settings.fixed_binding and settings.task == "binding",
                      batch_size=settings.train_batch, samples=1000, seed=settings.seed)
    methods, opts = {}, {}
    variants = [(name, name, {}) for name in trainable_names()]
    variants += [(f"{name} (teacher {dict(over)['train_shots']} shots)", name, dict(over)) for name, over in settings.train_extra]
    for label, name, over in variants:
        m = fresh_method(backbone, name, **over)
        m.train()
        methods[label] = m
        opts[label] = torch.optim.AdamW(_param_groups(m, cfg.weight_decay), lr=cfg.lr)

    def one_step(name: str, episodes) -> None:
        m, opt = methods[name], opts[name]
        loss, _ = m.loss(episodes, loss_on="query")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.trainable_parameters(), cfg.clip)
        opt.step()

    def task(name):
        def t(r: int) -> float:
            episodes = training_batch(methods[name], cfg, r)  # data generation: not timed
            t0 = time.perf_counter()
            one_step(name, episodes)
            return time.perf_counter() - t0
        return t

    times = round_robin({n: task(n) for n in methods}, settings.train_rounds)
    rows = []
    for name, m in methods.items():
        episodes = training_batch(m, cfg, 0)
        with FlopCounterMode(display=False) as fc:
            one_step(name, episodes)
        flops = int(fc.get_total_flops())
        mems = [peak_rss_delta(lambda: one_step(name, episodes)) for _ in range(settings.memory_repeats)]
        mems = [x for x in mems if x is not None]
        rows.append({"method": name, "teacher": bool(m.needs_teacher), "train_shots": int(m.config.train_shots),
                     "step_s": summarize(times[name]), "flops": flops,
                     "peak_rss_delta": summarize(mems)["median"] if mems else None,
                     "trainable": int(m.num_trainable())})
        m.eval()
    ref = next(r for r in rows if r["method"] == REFERENCE)
    for r in rows:
        r["time_ratio"] = ratio(r["step_s"]["median"], ref["step_s"]["median"])
        r["flops_ratio"] = ratio(r["flops"], ref["flops"])
        r["memory_ratio"] = ratio(r["peak_rss_delta"], ref["peak_rss_delta"])
        r["params_ratio"] = ratio(r["trainable"], ref["trainable"])
    return {"task": settings.task, "fixed_binding": cfg.fixed_binding, "batch_size": cfg.batch_size,
            "rounds": settings.train_rounds, "reference": REFERENCE, "rows": rows,
            "notes": [
                "One step = the method's loss (teacher forward included where it has one) + backward + gradient "
                "clipping + AdamW step; the episodes of each step are generated before the timer starts.",
                f"Every method gets the same queries at each step (TrainConfig batch {cfg.batch_size}, "
                f"task {settings.task}{' fixed binding' if cfg.fixed_binding else ''}); teacher methods add their "
                f"own train_shots demos.",
                "FLOPs: torch.utils.flop_counter.FlopCounterMode over one step (matmul / attention FLOPs of forward "
                "and backward; element-wise ops are not counted).",
                "Rows with '(teacher N shots)' are the same method with a larger teacher context (the papers use "
                "8-32 demonstrations); the goal uses the method's default config.",
                "Peak memory: growth of the process's peak RSS (VmHWM, reset through /proc/self/clear_refs after "
                "gc + malloc_trim) during one step, median of "
                f"{settings.memory_repeats}; resident memory, not tracemalloc (tracemalloc does not see torch's allocator).",
                f"Steps interleaved round-robin over the methods ({settings.train_rounds} rounds, one warm-up round discarded).",
            ]}
