"""k-shot evaluation on held-out episodes (the same queries at every shot count), scored by the
task's metric: exact match for the synthetic tasks; for local datasets their ``metric`` --
VQA accuracy per question over its ten answers, or a corpus metric over the whole run (CIDEr-D
with document frequencies from the whole reference split, BLEU-4, ROUGE-L)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from ..data import get_task, make_episode
from .exact_match import exact_match

EXACT_MATCH = "exact_match"  # the synthetic tasks' metric (no ``metric`` attribute)
PER_ITEM = (EXACT_MATCH, "accuracy", "vqa_accuracy")  # scored per query, then averaged
CORPUS = ("cider", "bleu", "rouge")  # scored over the run's predictions at once
PAPER_CUTS = ("\n", "Question", "Answer", "Image", "Short")  # MimIC/HiFICL answer post-processing


@dataclass
class ShotResult:
    shots: int
    accuracy: float  # the main number: the task's metric (``metric``), e.g. exact match, VQA accuracy, CIDEr-D
    n: int
    predictions: list[tuple[str, str]] = field(default_factory=list)  # (prediction, reference)
    seconds: float = 0.0  # generation wall time for all n queries
    metric: str = EXACT_MATCH
    extra: dict = field(default_factory=dict)  # the task's secondary metrics (``Task.extra_metrics``), by name


EXTRA_METRICS = ("cider", "content")  # secondary metrics a task may ask for beside its main one


def extra_scores(names: Sequence[str], predictions: Sequence[str], references: Sequence[Sequence[str]],
                 alternatives: Sequence[str | None]) -> dict:
    """Secondary metrics of one run: ``cider`` (CIDEr-D, document frequencies from the run's own
    references) and ``content`` (exact match against the answer OR its alternative, e.g. the same
    content under the other naming convention of a downstream task)."""
    out = {}
    for name in names:
        if name == "cider":
            from .metrics import CiderD

            out[name] = CiderD(references).score(list(predictions), list(references)).score
        elif name == "content":
            out[name] = sum(exact_match(p, list(r) + ([a] if a else [])) for p, r, a in
                            zip(predictions, references, alternatives)) / len(predictions)
        else:
            raise ValueError(f"unknown secondary metric {name!r}; known: {', '.join(EXTRA_METRICS)}")
    return out


def task_metric(task) -> str:
    """The metric a task is scored by: its ``metric`` attribute, else exact match."""
    metric = getattr(task, "metric", None) or EXACT_MATCH
    if metric not in PER_ITEM + CORPUS:
        raise ValueError(f"task {getattr(task, 'name', task)!r} has unknown metric {metric!r}; "
                         f"known: {', '.join(PER_ITEM + CORPUS)}")
    return metric


def cut_answer(text: str, cuts: Sequence[str]) -> str:
    """``text`` up to the first of ``cuts`` (e.g. the papers' "\\n", "Question", ...), stripped."""
    for c in cuts:
        text = text.split(c, 1)[0]
    return text.strip()


class RunScorer:
    """Scores one run of predictions by ``metric``.  ``df_references``: every reference list of the
    split (CIDEr-D's document frequencies; by default the references scored)."""

    def __init__(self, metric: str, df_references: Sequence[Sequence[str]] | None = None):
        self.metric = metric
        self._cider = None
        if metric == "cider" and df_references is not None:
            from .metrics import CiderD

            self._cider = CiderD(df_references)

    def __call__(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
        from . import metrics

        if self.metric == EXACT_MATCH:  # summed in order, as before: synthetic results are unchanged
            return sum(exact_match(p, r) for p, r in zip(predictions, references)) / len(predictions)
        if self.metric == "cider":
            cider = self._cider or metrics.CiderD(references)
            return cider.score(list(predictions), list(references)).score
        return metrics.score(self.metric, predictions, references)


def split_references(task, split: str) -> list[list[str]] | None:
    """Every reference list of ``split`` of a local task (None for the generated tasks)."""
    dataset = getattr(task, "dataset", None)
    return dataset(split).references() if callable(dataset) else None


def evaluate_icl(backbone, task: str, shots: Sequence[int], **kwargs) -> list[ShotResult]:
    """Plain k-shot ICL for each k in ``shots`` on held-out episodes, scored by the task's metric."""
    kwargs.setdefault("embed_fn", getattr(backbone, "retrieval_embedding", None))
    return evaluate_generation(backbone.generate, task, shots, **kwargs)


def evaluate_generation(generate: Callable, task, shots: Sequence[int], *, episodes: int = 300, seed: int = 0,
                        selection: str = "random", batch_size: int = 32, split: str = "test", keep_predictions: int = 0,
                        progress: bool = True, callback: Callable[[float, str], None] | None = None,
                        task_options: dict | None = None, embed_fn: Callable | None = None,
                        max_new_tokens: int | None = None, generate_kwargs: dict | None = None,
                        cut_at: Sequence[str] = ()) -> list[ShotResult]:
    """Score ``generate(episodes, max_new_tokens=..., **generate_kwargs) -> answers`` for each k in
    ``shots`` on ``episodes`` held-out episodes (the same queries at every k) by the task's metric
    (:func:`task_metric`).  Also times it.  ``max_new_tokens``: instead of the task's;
    ``generate_kwargs``: e.g. ``{"num_beams": 3}``; ``cut_at``: strings at which each answer is cut
    before scoring (e.g. :data:`PAPER_CUTS`)."""
    t = get_task(task, **(task_options or {}))
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    metric = task_metric(t)
    scorer = RunScorer(metric, split_references(t, split) if metric == "cider" else None)
    embed = embed_fn if selection == "similarity" else None
    gen_kw = {"max_new_tokens": max_new_tokens or t.max_new_tokens, **(generate_kwargs or {})}
    results = []
    total = len(shots) * episodes
    bar = tqdm(total=total, desc=f"{t.name}", disable=not progress, leave=False)
    done = 0
    for k in shots:
        outs_all, refs_all, alts, preds, secs = [], [], [], [], 0.0
        for start in range(0, episodes, batch_size):
            eps = [make_episode(t, k, seed=seed, index=i, split=split, selection=selection, embed_fn=embed,
                                pool_size=max(t.default_pool_size, k))
                   for i in range(start, min(episodes, start + batch_size))]
            t0 = time.perf_counter()
            with torch.no_grad():
                outs = generate(eps, **gen_kw)
            secs += time.perf_counter() - t0
            for ep, out in zip(eps, outs):
                out = cut_answer(out, cut_at) if cut_at else out
                outs_all.append(out)
                refs_all.append(list(ep.query.answers))
                alts.append(ep.query.meta.get("alternative"))
                if len(preds) < keep_predictions:
                    preds.append((out, ep.query.answer))
            done += len(eps)
            bar.update(len(eps))
            if callback:
                callback(done / total, f"{t.name} {k}-shot")
        extra = extra_scores(getattr(t, "extra_metrics", ()), outs_all, refs_all, alts)
        results.append(ShotResult(int(k), scorer(outs_all, refs_all), episodes, preds, secs, metric, extra))
    bar.close()
    return results
