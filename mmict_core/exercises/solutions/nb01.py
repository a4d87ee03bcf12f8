"""Worked solutions of notebook 01's exercises (see mmict_core.exercises.solutions)."""
from __future__ import annotations


def wilson(correct, n):
    import math

    z = 1.959964  # the two-sided 95% normal quantile
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if p == 0 else centre - half
    hi = 1.0 if p == 1 else centre + half
    return lo, hi


def accuracy_by_shots(generate, task, shots, episodes, seed):
    from mmict_core.data import get_task, make_episode
    from mmict_core.evaluate.exact_match import exact_match

    t = get_task(task)
    acc = {}
    for k in shots:
        # the SAME held-out queries at every k: episode i depends on (seed, split, index), never on k
        eps = [make_episode(t, k, seed=seed, index=i, split="test") for i in range(episodes)]
        answers = generate(eps, max_new_tokens=t.max_new_tokens)
        acc[k] = sum(exact_match(a, ep.query.answers) for a, ep in zip(answers, eps)) / episodes
    return acc
