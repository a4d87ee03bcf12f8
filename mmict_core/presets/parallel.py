"""Data parallelism for preset runs under ``torchrun`` / ``accelerate launch`` (several processes,
one GPU each): the shared code of :mod:`mmict_core.parallel`.

The trainer (:func:`mmict_core.train.train`) shares every batch over the processes and averages the
adapter's gradients by itself; the preset runner only needs to know which process it is (the main
process saves the adapters and evaluates) and to let the main process write the fixtures first.
``data_parallel`` is re-exported for hand-written training loops; it is not used around ``train``.
"""
from __future__ import annotations

from ..parallel import World, data_parallel, is_main, main_first, world

__all__ = ["World", "data_parallel", "is_main", "main_first", "world"]
