"""Notebook exercises: "implement it" cells checked against the library, with hints and solutions.

Each exercise is registered under a key such as ``"01.wilson"`` (notebook number . name) with

- ``reference`` — the library's own implementation (the check compares against it, never against the
  solution, so the solution is tested too);
- ``cases`` — inputs to try, built from a seeded generator;
- ``same`` — how two outputs are compared (default: tensors / numbers / strings equal within 1e-5);
- ``hints`` — what usually went wrong, shown when an output differs;
- ``solution`` — a worked solution, a function in :mod:`mmict_core.exercises.solutions` named as the
  notebook's exercise cell names it; shown by :func:`show_solution` and filled in by CI.

One module per notebook registers its exercises (``nb01.py``, ``nb02.py``, ...; all imported here).

In a notebook::

    def wilson(successes, n): ...            # the student's cell (tagged "exercise")
    check("01.wilson", wilson)               # ✓, or ✗ with the failing input and a hint

``check`` never raises: a notebook run top to bottom keeps going before the student has written anything.
"""
from __future__ import annotations

from .core import EXERCISES, Exercise, check, exercise, predicted, show_solution, solution_source

__all__ = ["EXERCISES", "Exercise", "check", "exercise", "predicted", "show_solution", "solution_source"]

import importlib as _importlib  # noqa: E402
import pkgutil as _pkgutil  # noqa: E402

for _m in sorted(m.name for m in _pkgutil.iter_modules(__path__) if m.name.startswith("nb")):
    _importlib.import_module(f"{__name__}.{_m}")  # registers that notebook's exercises
