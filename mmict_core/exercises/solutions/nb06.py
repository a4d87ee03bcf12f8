"""Worked solutions of notebook 06's exercises (see mmict_core.exercises.solutions)."""
from __future__ import annotations


def dummy_contexts(episode, contexts):
    from mmict_core.data import Episode

    k = episode.k
    n = min(contexts, k)
    out = []
    for j in range(k - n, k):  # the last n demos take turns as the dummy query x'
        context = [d for i, d in enumerate(episode.demos) if i != j]  # the other k - 1 demos, in order
        out.append(Episode(demos=context, query=episode.demos[j], task=episode.task))
    return out


def function_vector(aie, contributions, heads):
    import torch

    L, H = aie.shape
    order = torch.argsort(aie.reshape(-1), descending=True)[:heads]  # the heads with the largest effect, all layers
    fv = torch.zeros(contributions.shape[-1], dtype=contributions.dtype)
    for i in order.tolist():
        fv = fv + contributions[i // H, i % H]  # (d,): that head's share of the residual stream
    return fv
