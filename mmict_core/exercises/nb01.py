"""Exercises of notebook 01 (in-context learning).  Each checks against the library function the
notebook's text explains; the worked solution is a plain implementation from the formula, so the
check tests it too."""
from __future__ import annotations

import math
import random

from .core import Exercise, exercise
from .solutions import nb01 as solutions


def _wilson_ref(correct: float, n: int) -> tuple[float, float]:
    from ..evaluate.claims import wilson_interval

    return wilson_interval(correct, n)


def _wilson_cases(rng: random.Random):
    fixed = [((0, 50), {}), ((50, 50), {}), ((25, 50), {}), ((1, 1), {}), ((196, 200), {})]
    return fixed + [((k, n), {}) for n in (rng.randint(5, 400) for _ in range(6)) for k in [rng.randint(0, n)]]


def _wilson_normal(correct, n):  # the textbook normal interval: too narrow near 0 and 1, can leave [0, 1]
    p, z = correct / n, 1.959964
    h = z * math.sqrt(p * (1 - p) / n)
    return p - h, p + h


exercise(Exercise(
    key="01.wilson", title="01 · the 95% Wilson interval of an accuracy", reference=_wilson_ref,
    cases=_wilson_cases, solution=solutions.wilson,
    hints=("the Wilson interval solves |p - p_hat| = z * sqrt(p(1-p)/n) for p: centre "
           "(p_hat + z²/2n) / (1 + z²/n), half-width z*sqrt(p_hat(1-p_hat)/n + z²/4n²) / (1 + z²/n), z = 1.959964",
           "at 0 correct the lower end is exactly 0, at n correct the upper end is exactly 1"),
    wrong=(_wilson_normal,)))


# ---------------------------------------------------------------- 01.accuracy_by_shots


class ToyModel:
    """A stand-in for ``backbone.generate`` that needs no network: ``generate(episodes, **kw) -> answers``.
    The check runs the student's loop on these (fast, deterministic); the notebook then runs it on the VLM."""

    def __init__(self, name: str, answer):
        self.name, self.answer = name, answer

    def __call__(self, episodes, **generate_kwargs):
        return [self.answer(ep) for ep in episodes]

    def __repr__(self) -> str:
        return f"<toy model: {self.name}>"


def _copy_last(ep) -> str:
    return ep.demos[-1].answer if ep.demos else ""


def _majority_shouted(ep) -> str:  # "Dax." — right answers in a form only a normalising match accepts
    answers = [d.answer for d in ep.demos]
    return (max(sorted(set(answers)), key=answers.count).capitalize() + ".") if answers else "?"


TOY_MODELS = (ToyModel("copies the last demonstration's answer", _copy_last),
              ToyModel("says the most common demonstration answer, capitalised, with a full stop", _majority_shouted))


def _accuracy_by_shots_ref(generate, task, shots, episodes, seed):
    from ..evaluate.icl import evaluate_generation

    return {r.shots: r.accuracy for r in evaluate_generation(generate, task, shots, episodes=episodes, seed=seed,
                                                             progress=False)}


def _accuracy_by_shots_cases(rng: random.Random):
    cases = []
    for task in ("binding", "operator", "format"):
        for model in TOY_MODELS:
            shots = sorted(rng.sample([0, 1, 2, 4, 8], 3))
            cases.append(((model, task, shots, rng.randint(6, 10), rng.randint(0, 999)), {}))
    return cases


def _fresh_queries_per_k(generate, task, shots, episodes, seed):  # new episodes at every k: noise, not shots
    from ..data import get_task, make_episode
    from ..evaluate.exact_match import exact_match

    t, acc = get_task(task), {}
    for k in shots:
        eps = [make_episode(t, k, seed=seed, index=k * episodes + i) for i in range(episodes)]
        acc[k] = sum(exact_match(a, ep.query.answers) for a, ep in zip(generate(eps), eps)) / episodes
    return acc


def _string_equality(generate, task, shots, episodes, seed):  # "Dax." != "dax": no answer normalisation
    from ..data import get_task, make_episode

    t, acc = get_task(task), {}
    for k in shots:
        eps = [make_episode(t, k, seed=seed, index=i) for i in range(episodes)]
        acc[k] = sum(a == ep.query.answer for a, ep in zip(generate(eps), eps)) / episodes
    return acc


exercise(Exercise(
    key="01.accuracy_by_shots", title="01 · accuracy against the number of shots",
    reference=_accuracy_by_shots_ref, cases=_accuracy_by_shots_cases, solution=solutions.accuracy_by_shots,
    hints=("for each k build the episodes make_episode(task, k, seed=seed, index=i, split='test') for i in "
           "range(episodes) — the same indices at every k, so every k answers the same queries",
           "call generate(list_of_episodes, max_new_tokens=task.max_new_tokens) once per k; it returns one string per episode",
           "score with mmict_core.evaluate.exact_match.exact_match(answer, episode.query.answers): it normalises "
           "('Dax.' matches 'dax'); plain == does not",
           "return {k: accuracy} with accuracy = correct / episodes, a float in [0, 1]"),
    wrong=(_fresh_queries_per_k, _string_equality)))
