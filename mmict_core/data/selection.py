"""Demonstration selection strategies: which k of an episode pool become the demos.

``random``       uniform without replacement (nested: the first k of one permutation).
``similarity``   RICES-style: the k pool items whose image embedding is nearest (cosine) to the
                 query's, the most similar placed last, next to the query.
``balanced``     round-robin over the pool's labels, so every class appears before any repeats.
``fixed``        the user's own indices, in the user's order.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .example import Example, validate_k

STRATEGIES = ("random", "similarity", "balanced", "fixed")
EmbedFn = Callable[[list[np.ndarray]], np.ndarray]


def pixel_embedding(images: list[np.ndarray]) -> np.ndarray:
    """A model-free image embedding: the image averaged down to 8x8x3, centred.  (N, 192)"""
    out = []
    for im in images:
        h, w = im.shape[:2]
        ys = (np.arange(8) * h) // 8
        xs = (np.arange(8) * w) // 8
        small = np.add.reduceat(np.add.reduceat(im.astype(np.float32), ys, axis=0), xs, axis=1)
        out.append(small.reshape(-1))
    e = np.stack(out)
    return e - e.mean(axis=1, keepdims=True)


def select_demos(
    strategy: str,
    pool: Sequence[Example],
    query: Example,
    k: int,
    rng: np.random.Generator,
    *,
    embed_fn: EmbedFn | None = None,
    fixed_indices: Sequence[int] | None = None,
) -> list[int]:
    """Indices into ``pool`` of the ``k`` demonstrations, in the order they are shown."""
    validate_k(k, pool)
    if strategy == "random":
        return [int(i) for i in rng.permutation(len(pool))[:k]]
    if strategy == "similarity":
        if k == 0:
            return []
        embed = embed_fn or pixel_embedding
        e = np.asarray(embed([ex.images[0] for ex in pool] + [query.images[0]]), dtype=np.float64)
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        sims = e[:-1] @ e[-1]  # (pool,)
        top = np.argsort(-sims, kind="stable")[:k]
        return [int(i) for i in top[::-1]]  # most similar last
    if strategy == "balanced":
        by_label: dict[str, list[int]] = {}
        for i in rng.permutation(len(pool)):
            by_label.setdefault(pool[int(i)].label, []).append(int(i))
        labels = list(by_label)
        chosen: list[int] = []
        while len(chosen) < k:
            for lab in labels:
                if by_label[lab] and len(chosen) < k:
                    chosen.append(by_label[lab].pop())
        order = rng.permutation(len(chosen))
        return [chosen[i] for i in order]
    if strategy == "fixed":
        if fixed_indices is None:
            raise ValueError("selection 'fixed' needs the demonstration indices (fixed_indices)")
        idx = [int(i) for i in fixed_indices]
        bad = [i for i in idx if not 0 <= i < len(pool)]
        if bad:
            raise ValueError(f"demonstration indices {bad} are outside the pool of {len(pool)} items")
        if len(set(idx)) != len(idx):
            raise ValueError("a demonstration index appears twice; pick each pool item once")
        return idx
    raise ValueError(f"unknown selection strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
