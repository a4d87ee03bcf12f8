"""Exercises of notebook 04 (M2IV and the VLibrary): the many-shot teacher (m disjoint demo sets,
one context each, outputs averaged) and VLibrary composition (a weighted sum of every tensor).
Checked against the library: ``split_demo_sets`` (what ``M2IV.teacher_outputs`` reads) and
``mix_tensors`` (what ``VLibrary.compose`` computes)."""
from __future__ import annotations

import random

import torch

from .core import Exercise, exercise
from .solutions import nb04 as solutions


# -- 04.teacher: the many-shot teacher ----------------------------------------------------------
def toy_teacher(episode) -> torch.Tensor:
    """A stand-in teacher that reads an episode: a distribution over 6 'answers' that depends on which
    demonstrations it sees and in which order (as a real ICL teacher does).  (6,)"""
    x = torch.zeros(6, dtype=torch.float64)
    for j, d in enumerate(episode.demos):
        x[sum(map(ord, d.answer)) % 6] += 1.0 + 0.5 * j  # later demos weigh more
    x[sum(map(ord, episode.query.prompt)) % 6] += 0.25
    return torch.softmax(x, 0)  # (6,)


def _teacher_ref(episode, m, run):
    from ..methods.m2iv import split_demo_sets

    return torch.stack([run(e) for e in split_demo_sets(episode, m)]).mean(0)  # (m, ...) -> (...)


def _teacher_cases(rng: random.Random):
    from ..data import make_episode

    out = []
    for task, k, m in [("ft-vqa", 4, 2), ("ft-vqa", 8, 4), ("ft-vqa", 6, 3), ("ft-vqa", 4, 1), ("binding", 8, 2)] + [
            ("ft-caption", 2 * j, 2) for j in (rng.randint(2, 4) for _ in range(2))]:
        ep = make_episode(task, k, seed=rng.randrange(1000), index=rng.randrange(1000), split="train", pool_size=k)
        out.append(((ep, m, toy_teacher), {}))
    return out


def _teacher_one_context(episode, m, run):  # all k demos in one long context: not a many-shot teacher
    return run(episode)


def _teacher_interleaved(episode, m, run):  # demos dealt round-robin instead of cut in order
    from ..data import Episode

    return torch.stack([run(Episode(list(episode.demos[j::m]), episode.query, episode.task, dict(episode.info)))
                        for j in range(m)]).mean(0)


def _teacher_summed(episode, m, run):  # the sets' outputs added, not averaged
    return _teacher_ref(episode, m, run) * m


exercise(Exercise(
    key="04.teacher", title="04 · the many-shot teacher (m contexts, outputs averaged)", reference=_teacher_ref,
    cases=_teacher_cases, solution=solutions.many_shot_teacher,
    hints=("cut episode.demos IN ORDER into m disjoint sets of k/m (set j = demos[j*k/m : (j+1)*k/m]), put the same "
           "query after each (Episode(demos=..., query=episode.query, task=episode.task, info=episode.info)), run "
           "each set through run(), and average the m outputs",
           "average, do not add: torch.stack(outputs).mean(0)"),
    wrong=(_teacher_one_context, _teacher_interleaved, _teacher_summed)))


# -- 04.compose: VLibrary composition ------------------------------------------------------------
def _compose_ref(states, weights=None):
    from ..vlibrary.library import mix_tensors

    return mix_tensors(states, weights)


def _compose_cases(rng: random.Random):
    out = []
    for n, w in [(2, None), (3, None), (2, [0.5, 0.5]), (2, [1.0, -1.0]), (3, [0.2, 0.3, 1.5]), (1, None)] + [
            (n, [round(rng.uniform(-1, 2), 3) for _ in range(n)]) for n in (rng.randint(2, 4) for _ in range(2))]:
        g = torch.Generator().manual_seed(rng.randrange(2**31))
        shapes = {"mha_vectors": (4, 8), "mlp_vectors": (4, 8), "mha_strength": (4,)}
        states = [{k: torch.randn(*s, generator=g) for k, s in shapes.items()} for _ in range(n)]
        out.append(((states, w), {}))
    return out


def _compose_summed(states, weights=None):  # weights None read as 1 each: a sum, not a mean
    return _compose_ref(states, weights if weights is not None else [1.0] * len(states))


def _compose_normalised(states, weights=None):  # weights rescaled to sum to 1 (task arithmetic needs w = 1, -1)
    w = [1.0] * len(states) if weights is None else list(weights)
    s = sum(w)
    return _compose_ref(states, [x / s for x in w])


exercise(Exercise(
    key="04.compose", title="04 · composing adapters: a weighted sum of every tensor", reference=_compose_ref,
    cases=_compose_cases, solution=solutions.compose,
    hints=("for every tensor name: sum_i weights[i] * states[i][name]; with weights None every weight is 1/n "
           "(the mean of the entries)",
           "use the weights as given: VLibrary does not rescale them to sum to 1 (w = [1, -1] is a difference)"),
    wrong=(_compose_summed, _compose_normalised)))
