"""Plain k-shot ICL evaluation: the same held-out episodes at every shot count."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from ..data import get_task, make_episode
from .exact_match import exact_match


@dataclass
class ShotResult:
    shots: int
    accuracy: float
    n: int
    predictions: list[tuple[str, str]] = field(default_factory=list)  # (prediction, reference)
    seconds: float = 0.0  # generation wall time for all n queries


def evaluate_icl(backbone, task: str, shots: Sequence[int], **kwargs) -> list[ShotResult]:
    """Exact-match accuracy of plain k-shot ICL for each k in ``shots`` on held-out episodes."""
    kwargs.setdefault("embed_fn", getattr(backbone, "retrieval_embedding", None))
    return evaluate_generation(backbone.generate, task, shots, **kwargs)


def evaluate_generation(generate: Callable, task, shots: Sequence[int], *, episodes: int = 300, seed: int = 0,
                        selection: str = "random", batch_size: int = 32, split: str = "test", keep_predictions: int = 0,
                        progress: bool = True, callback: Callable[[float, str], None] | None = None,
                        task_options: dict | None = None, embed_fn: Callable | None = None) -> list[ShotResult]:
    """Exact-match accuracy of ``generate(episodes, max_new_tokens=...) -> answers`` for each k in
    ``shots`` on ``episodes`` held-out episodes (the same queries at every k).  Also times it."""
    t = get_task(task, **(task_options or {}))
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    embed = embed_fn if selection == "similarity" else None
    results = []
    total = len(shots) * episodes
    bar = tqdm(total=total, desc=f"{t.name}", disable=not progress, leave=False)
    done = 0
    for k in shots:
        correct, preds, secs = 0.0, [], 0.0
        for start in range(0, episodes, batch_size):
            eps = [make_episode(t, k, seed=seed, index=i, split=split, selection=selection, embed_fn=embed,
                                pool_size=max(t.default_pool_size, k))
                   for i in range(start, min(episodes, start + batch_size))]
            t0 = time.perf_counter()
            with torch.no_grad():
                outs = generate(eps, max_new_tokens=t.max_new_tokens)
            secs += time.perf_counter() - t0
            for ep, out in zip(eps, outs):
                correct += exact_match(out, ep.query.answers)
                if len(preds) < keep_predictions:
                    preds.append((out, ep.query.answer))
            done += len(eps)
            bar.update(len(eps))
            if callback:
                callback(done / total, f"{t.name} {k}-shot")
        results.append(ShotResult(int(k), correct / episodes, episodes, preds, secs))
    bar.close()
    return results
