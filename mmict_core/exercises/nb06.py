"""Exercises of notebook 06 (from demonstrations to vectors).  Each checks against the library code
the training-free vector methods run: the leave-one-out dummy-query contexts a task vector is read
from (:func:`..methods.vectors.dummy_query_contexts`) and the function vector summed from the heads
with the largest indirect effect (:func:`..methods.function_vector.top_heads_vector`)."""
from __future__ import annotations

import random

import torch

from .core import Exercise, exercise
from .solutions import nb06 as solutions

# ---------------------------------------------------------------- 06.dummy_contexts


def _contexts_ref(episode, contexts):
    from ..methods.vectors import dummy_query_contexts

    return dummy_query_contexts(episode, contexts)


def _contexts_cases(rng: random.Random):
    from ..data import get_task, make_episode

    t = get_task("binding")
    out = []
    for k, c in ((4, 1), (4, 3), (5, 5), (3, 7), (6, 2)):
        out.append(((make_episode(t, k, seed=rng.randint(0, 999), index=rng.randint(0, 99), split="val"), c), {}))
    return out


def _which(eps) -> list | None:
    """Each context as (the demos' identities in order, the dummy query's identity): the same examples,
    not copies, in the same order."""
    try:
        return [([id(d) for d in e.demos], id(e.query)) for e in eps]
    except (AttributeError, TypeError):
        return None


def _same_contexts(a, b) -> bool:
    return isinstance(a, list) and _which(a) is not None and _which(a) == _which(b)


def _contexts_first(episode, contexts):  # the first demos as dummy queries (the paper's x' is the last)
    from ..data import Episode

    n = min(contexts, episode.k)
    return [Episode(demos=[d for i, d in enumerate(episode.demos) if i != j], query=episode.demos[j], task=episode.task)
            for j in range(n)]


def _contexts_keep_dummy(episode, contexts):  # the dummy query left in its own context: the answer is in the prompt
    from ..data import Episode

    n = min(contexts, episode.k)
    return [Episode(demos=list(episode.demos), query=episode.demos[j], task=episode.task)
            for j in range(episode.k - n, episode.k)]


exercise(Exercise(
    key="06.dummy_contexts", title="06 · the leave-one-out dummy-query contexts of a task vector",
    reference=_contexts_ref, cases=_contexts_cases, solution=solutions.dummy_contexts, same=_same_contexts,
    hints=("one context per dummy query: the j-th of the LAST min(contexts, k) demos is the query, every other "
           "demo (in its order) the context — Episode(demos=..., query=episode.demos[j], task=episode.task)",
           "never put the dummy query into its own context (its answer would be in the prompt); "
           "never read episode.query (the real query)"),
    wrong=(_contexts_first, _contexts_keep_dummy)))


# ---------------------------------------------------------------- 06.function_vector


def _fv_ref(aie, contributions, heads):
    from ..methods.function_vector import top_heads_vector

    return top_heads_vector(aie, contributions, heads)[0]


def _fv_cases(rng: random.Random):
    out = []
    for L, H, d, heads in ((4, 4, 8, 3), (2, 3, 5, 1), (3, 2, 4, 6), (4, 4, 6, 5)):
        g = torch.Generator().manual_seed(rng.randint(0, 2**31))
        aie = torch.randn(L, H, generator=g, dtype=torch.float64) * 0.1
        out.append(((aie, torch.randn(L, H, d, generator=g, dtype=torch.float64), heads), {}))
    return out


def _fv_per_layer(aie, contributions, heads):  # the best heads of each layer, not over all layers
    L = aie.shape[0]
    fv = torch.zeros(contributions.shape[-1], dtype=contributions.dtype)
    for l in range(L):
        for j in aie[l].topk(min(heads, aie.shape[1])).indices:
            fv += contributions[l, j]
    return fv


def _fv_smallest(aie, contributions, heads):  # topk of the wrong sign: the heads that matter least
    H = aie.shape[1]
    fv = torch.zeros(contributions.shape[-1], dtype=contributions.dtype)
    for i in aie.reshape(-1).topk(heads, largest=False).indices:
        fv += contributions[int(i) // H, int(i) % H]
    return fv


def _fv_mean(aie, contributions, heads):  # averaged instead of summed
    H = aie.shape[1]
    idx = aie.reshape(-1).topk(heads).indices
    return torch.stack([contributions[int(i) // H, int(i) % H] for i in idx]).mean(0)


exercise(Exercise(
    key="06.function_vector", title="06 · the function vector: the top heads by indirect effect, summed",
    reference=_fv_ref, cases=_fv_cases, solution=solutions.function_vector,
    hints=("rank ALL L x H heads together by their average indirect effect (largest first: aie.reshape(-1).topk(heads))",
           "flat index i is head (i // H, i % H); add up contributions[l, j] of the chosen heads (a sum, not a mean)"),
    wrong=(_fv_per_layer, _fv_smallest, _fv_mean)))
