"""The exercise registry and the check that runs a student's function against the library's."""
from __future__ import annotations

import inspect
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

EXERCISES: dict[str, "Exercise"] = {}


def same(a: Any, b: Any, tol: float = 1e-5) -> bool:
    """Equal within ``tol`` (relative or absolute) for tensors and numbers, recursively for sequences."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
            return False
        return bool(torch.allclose(a.double(), b.double(), rtol=tol, atol=tol))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=tol, abs_tol=tol)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], tol) for k in a)
    return a == b


@dataclass(frozen=True)
class Exercise:
    key: str
    title: str
    reference: Callable  # the library's implementation
    cases: Callable[[random.Random], Sequence[tuple[tuple, dict]]]  # rng -> [(args, kwargs), ...]
    solution: Callable  # the worked solution (mmict_core.exercises.solutions.nbNN), named as the notebook cell
    hints: tuple[str, ...] = ()
    same: Callable[[Any, Any], bool] = same
    wrong: tuple[Callable, ...] = field(default=())  # plausible mistakes the check must catch (tested)


def exercise(ex: Exercise) -> Exercise:
    if ex.key in EXERCISES:
        raise ValueError(f"exercise {ex.key!r} is registered twice")
    EXERCISES[ex.key] = ex
    return ex


def _get(key: str) -> Exercise:
    try:
        return EXERCISES[key]
    except KeyError:
        raise KeyError(f"no exercise {key!r}; known: {sorted(EXERCISES)}") from None


def _short(x: Any, n: int = 160) -> str:
    if isinstance(x, torch.Tensor):
        s = f"tensor of shape {tuple(x.shape)}" + (f": {x.flatten()[:6].tolist()}..." if x.numel() else "")
    elif isinstance(x, tuple) and any(isinstance(v, torch.Tensor) for v in x):  # e.g. (q, scale)
        return "(" + ", ".join(_short(v, n) for v in x) + ")"
    else:
        s = repr(x)
    return s if len(s) <= n else s[: n - 3] + "..."


def run_check(key: str, fn: Callable, seed: int = 0) -> tuple[bool, str]:
    """(passed, message) for ``fn`` against the exercise's reference on its cases."""
    ex = _get(key)
    if not callable(fn):
        return False, f"✗ {ex.title}: expected a function, got {type(fn).__name__}."
    cases = list(ex.cases(random.Random(seed)))
    for i, (args, kwargs) in enumerate(cases):
        want = ex.reference(*args, **kwargs)
        try:
            got = fn(*args, **kwargs)
        except NotImplementedError:
            return False, f"… {ex.title}: not implemented yet — write the function body, then run this cell again."
        except Exception as e:  # the student's code: show what went wrong, never a traceback
            return False, (f"✗ {ex.title}: your function raised {type(e).__name__}: {e} "
                           f"(case {i + 1} of {len(cases)}).\n  Hint: " + (ex.hints[0] if ex.hints else ""))
        if not ex.same(got, want):
            detail = "\n".join(f"  {k} = {_short(v)}" for k, v in
                               list(zip(inspect.signature(ex.reference).parameters, args)) + list(kwargs.items()))
            hints = "\n".join(f"  Hint: {h}" for h in ex.hints)
            return False, (f"✗ {ex.title}: case {i + 1} of {len(cases)} differs.\n{detail}\n"
                           f"  expected {_short(want)}\n  got      {_short(got)}\n{hints}")
    return True, f"✓ {ex.title}: matches the library on all {len(cases)} cases."


def check(key: str, fn: Callable, seed: int = 0) -> bool:
    """Print the verdict on the student's ``fn``; return whether it passed (never raises on their code)."""
    ok, msg = run_check(key, fn, seed)
    print(msg)
    return ok


def solution_source(key: str) -> str:
    return inspect.getsource(_get(key).solution)


def show_solution(key: str) -> None:
    """Print one worked solution (try first: the check's hints usually suffice)."""
    print(solution_source(key))


def predicted(guess: Any, actual: float, what: str, tol: float = 0.1) -> None:
    """Close a predict-then-run question: compare the student's written guess with the run's number."""
    if guess is None:
        print(f"The run gave {what} = {actual:.3f}. (Write your guess in the prediction cell first next time.)")
        return
    try:
        g = float(guess)
    except (TypeError, ValueError):
        print(f"The run gave {what} = {actual:.3f}; your prediction {guess!r} is not a number.")
        return
    verdict = "close" if abs(g - actual) <= tol else ("too high" if g > actual else "too low")
    print(f"You predicted {what} = {g:.3f}; the run gave {actual:.3f} — {verdict}.")
