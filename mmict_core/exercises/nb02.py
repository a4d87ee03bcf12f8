"""Exercises of notebook 02 (MMICT): which slice of a Q-Former run each item feeds the LM, and the
order of MMICT's LM input.  Each checks against the library code the notebook explains (the M-Hub's
``HubRun`` slices, and the segments a real MMICT adapter builds on the teaching VLM)."""
from __future__ import annotations

import functools
import random

import torch

from .core import Exercise, exercise
from .solutions import nb02 as solutions


# -- 02.mhub_slice: the two slices of one Q-Former run -------------------------------------------
def _slice_ref(states, num_query, text_mask, is_query):
    from ..methods.mmict.mhub import HubRun

    real = [num_query + p for p in text_mask.nonzero().flatten().tolist()]  # output positions of real text tokens
    run = HubRun(states, real, [], num_query)
    return run.query_slice() if is_query else run.text_slice()


def _slice_cases(rng: random.Random):
    out = []
    for q, L, n, is_query in [(4, 5, 3, False), (4, 5, 3, True), (8, 6, 6, False), (2, 7, 1, False)] + [
            (rng.choice([2, 4, 8]), L, rng.randint(1, L), rng.random() < 0.4) for L in (rng.randint(3, 10) for _ in range(6))]:
        g = torch.Generator().manual_seed(rng.randrange(2**31))
        states = torch.randn(q + L, 6, generator=g)  # (Q + L, d_q)
        mask = torch.tensor([1] * n + [0] * (L - n))  # (L,) real text tokens first, then pads
        out.append(((states, q, mask, is_query), {}))
    return out


def _slice_with_pads(states, num_query, text_mask, is_query):  # keeps the pad positions of the text
    return states[:num_query] if is_query else states[num_query:]


def _slice_swapped(states, num_query, text_mask, is_query):  # demo <-> query roles exchanged
    return _slice_ref(states, num_query, text_mask, not is_query)


exercise(Exercise(
    key="02.mhub_slice", title="02 · the M-Hub slice an item feeds the LM", reference=_slice_ref,
    cases=_slice_cases, solution=solutions.mhub_features,
    hints=("the Q-Former's output rows are [Q query tokens ; L text tokens]: the query item feeds rows 0..Q-1 "
           "(instruction-guided visual features), a demonstration feeds the text rows Q.. (visual-guided textual features)",
           "keep only the real text tokens: text_mask is 1 for a real token and 0 for a pad, so row Q + j is kept "
           "where text_mask[j] == 1"),
    wrong=(_slice_with_pads, _slice_swapped)))


# -- 02.mmict_order: MMICT's LM input from the plain interleaved layout ------------------------------
@functools.lru_cache(maxsize=1)
def _teaching():
    from transformers.utils import logging as hf_logging

    from ..backbones import load_backbone
    from ..methods import create_method

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar inside the student's check cell
    try:
        bb = load_backbone("teaching")
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    return bb, create_method("mmict", bb), create_method("vanilla-ict", bb)


def _episode(k: int):
    from ..data import make_episode

    return make_episode("ft-vqa", k, seed=0, index=k, split="test", pool_size=max(k, 1))


@functools.lru_cache(maxsize=None)
def _plain_layout(k: int) -> tuple:
    _, _, ict = _teaching()
    return tuple((s.role, s.item) for s in ict.segments(_episode(k), with_answer=True))


@functools.lru_cache(maxsize=None)
def _mmict_layout(k: int) -> tuple:
    _, mmict, _ = _teaching()
    return tuple((s.role, s.item) for s in mmict.segments(_episode(k), with_answer=True))


def _order_ref(plain):
    """The layout a real MMICT adapter builds for the episode whose plain layout is ``plain``."""
    return list(_mmict_layout(max(item for _, item in plain)))


def _order_cases(rng: random.Random):
    return [((list(_plain_layout(k)), ), {}) for k in [0, 1, 2, 4, rng.randint(5, 8)]]


def _order_unchanged(plain):  # MMICT's input is not the plain one
    return list(plain)


def _order_no_sep(plain):  # the <eoc> separator after each demo forgotten
    return [x for x in _order_ref(plain) if x[0] != "sep"]


exercise(Exercise(
    key="02.mmict_order", title="02 · MMICT's LM input order", reference=_order_ref,
    cases=_order_cases, solution=solutions.mmict_layout,
    hints=("every demonstration i (its prompt, image, marker and answer segments) becomes ONE M-Hub text feature "
           "('mhub_text', i) followed by the separator ('sep', i)",
           "the BOS (item -1) stays first, and the query's own segments (prompt, image, marker, answer of item k) "
           "stay as they are, last"),
    wrong=(_order_unchanged, _order_no_sep)))
