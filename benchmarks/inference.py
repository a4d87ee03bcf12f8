"""1. Inference: per-query latency and LM tokens of 0-shot, k-shot ICL and every adapter at 0 demos,
as ratios to the plain 0-shot query measured in the same run (round-robin interleaved)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from mmict_core.methods import Method, get_method, method_names
from mmict_core.workbench import lm_tokens

from .common import assemble, context_of, episode, fresh_method, generate_fixed, lm_parameters
from .stats import ratio, round_robin, summarize

REFERENCE = "0-shot"


@dataclass
class Config:
    label: str
    kind: str  # 'plain', 'icl', 'adapter', 'adapter (demos)', 'reference'
    method: Method
    shots: int
    merged: bool = False


DISPLAY = {"mimic": "MimIC", "live": "LIVE", "m2iv": "M2IV"}
VARIANTS = {"hificl": ("hificl", "hificl-split"), "lora": ("lora", "lora-merged")}  # extra rows of one method


def default_adapters() -> tuple:
    """Every registered method but plain ICL (its rows are the reference and the k-shot rows), with
    HiFICL's split path and merged LoRA beside them: a new method needs no edit here."""
    return tuple(v for n in method_names() if n != "icl" for v in VARIANTS.get(n, (n,)))


def configurations(backbone, settings, *, icl_shots=None, adapters: tuple | None = None) -> list[Config]:
    icl_shots = settings.icl_shots if icl_shots is None else icl_shots
    adapters = default_adapters() if adapters is None else adapters
    out = [Config(REFERENCE, "reference", fresh_method(backbone, "icl"), 0)]
    out += [Config(f"ICL {k}-shot", "icl", fresh_method(backbone, "icl", shots=k), k) for k in icl_shots]
    lora = None
    for name in adapters:
        if name == "hificl":
            out.append(Config("HiFICL", "adapter", fresh_method(backbone, "hificl"), 0))
        elif name == "hificl-split":
            m = fresh_method(backbone, "hificl")
            m.attention_path = "split"
            out.append(Config("HiFICL (split path = before)", "adapter (reference path)", m, 0))
        elif name in ("lora", "lora-merged"):
            lora = lora or fresh_method(backbone, "lora")
            merged = name == "lora-merged"
            out.append(Config("LoRA merged" if merged else "LoRA unmerged", "adapter", lora, 0, merged=merged))
        elif get_method(name).uses_demos:  # reads demonstrations at inference (MMICT, training-free vectors)
            k = settings.mmict_shots
            label = "MMICT" if name == "mmict" else DISPLAY.get(name, name)
            out.append(Config(f"{label} {k} demos", "adapter (demos)", fresh_method(backbone, name, shots=k), k))
        else:
            out.append(Config(DISPLAY.get(name, name), "adapter", fresh_method(backbone, name), 0))
    for c in out:
        c.method.eval()
    return out


def _tasks(backbone, configs: list[Config], episodes_by_k: dict[int, list], new_tokens: int, what: str
           ) -> dict[str, Callable[[int], float]]:
    tasks = {}
    for c in configs:
        eps = episodes_by_k[c.shots]
        ctx = context_of(c.method, c.merged)

        def task(r: int, c=c, eps=eps, ctx=ctx) -> float:
            ep = eps[r % len(eps)]
            with torch.no_grad(), ctx():  # attaching / merging is a one-off: not timed
                if what == "query":  # image encoding + assembly + prefill + decoding
                    t0 = time.perf_counter()
                    generate_fixed(backbone, assemble(backbone, c.method, [ep]), new_tokens)
                    return time.perf_counter() - t0
                batch = assemble(backbone, c.method, [ep])  # the LM forward alone (prefill)
                t0 = time.perf_counter()
                backbone.forward(batch)
                return time.perf_counter() - t0

        tasks[c.label] = task
    return tasks


def measure(backbone, settings, configs: list[Config], rounds: int, name: str) -> dict:
    n_eps = settings.latency_episodes
    shots = sorted({c.shots for c in configs})
    episodes_by_k = {k: [episode(settings, k, index=i) for i in range(n_eps)] for k in shots}
    query = round_robin(_tasks(backbone, configs, episodes_by_k, settings.new_tokens, "query"), rounds)
    forward = round_robin(_tasks(backbone, configs, episodes_by_k, settings.new_tokens, "forward"), rounds)
    qs = {k: summarize(v) for k, v in query.items()}
    fs = {k: summarize(v) for k, v in forward.items()}
    tokens = {}
    for c in configs:
        with context_of(c.method, c.merged)():
            tokens[c.label] = lm_tokens(backbone, c.method, episodes_by_k[c.shots][0])
    rows = []
    for c in configs:
        rows.append({
            "label": c.label, "kind": c.kind, "shots": c.shots, "lm_tokens": tokens[c.label],
            "query_s": qs[c.label], "forward_s": fs[c.label],
            "query_ratio_median": ratio(qs[c.label]["median"], qs[REFERENCE]["median"]),
            "query_ratio_min": ratio(qs[c.label]["min"], qs[REFERENCE]["min"]),
            "forward_ratio_median": ratio(fs[c.label]["median"], fs[REFERENCE]["median"]),
            "token_ratio": ratio(tokens[c.label], tokens[REFERENCE]),
            "trainable": c.method.num_trainable(),
        })
    return {"backbone": name, "lm_parameters": lm_parameters(backbone), "rounds": rounds,
            "episodes": n_eps, "new_tokens": settings.new_tokens, "reference": REFERENCE, "rows": rows}


def run(backbone, settings, scaled_backbone=None) -> dict:
    out = {"teaching": measure(backbone, settings, configurations(backbone, settings), settings.latency_rounds, "teaching-vlm")}
    if scaled_backbone is not None:
        cfgs = configurations(scaled_backbone, settings, icl_shots=(8,), adapters=("hificl", "hificl-split", "lora-merged"))
        out["scaled"] = measure(scaled_backbone, settings, cfgs, settings.scaled_rounds, "scaled random LM")
        out["scaled"]["sizes"] = dict(settings.scaled_inference)
    out["notes"] = [
        "Adapters are freshly initialised, not trained: an adapter's inference cost does not depend on its weights.",
        f"Per-query latency = assemble the input (image encoding + embedding) + prefill + decoding exactly "
        f"{settings.new_tokens} tokens (min_new_tokens = max_new_tokens), batch 1; attaching an adapter or "
        f"merging LoRA is a one-off done outside the timed region.",
        "LM forward = one forward of the LM on the pre-assembled input (prefill only).",
        f"Configurations are interleaved round-robin ({settings.latency_rounds} rounds, rotating order, one warm-up "
        f"round discarded); each round uses the same query (one of {settings.latency_episodes}) for every configuration.",
        "Ratios are to the plain 0-shot query measured in the same run.",
    ]
    return out
