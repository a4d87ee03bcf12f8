"""Shared pieces of the activation-vector methods (task vectors, function vectors, MTV, I2CL, ...).

These methods read the k-shot context once ("extraction": a forward of the bare backbone over
in-context prompts ending in a dummy query), and then run the query at zero shots with a vector
written into one position of the residual stream or of an attention head ("patching").

- :func:`dummy_query_contexts`: the in-context prompts built from an episode's demonstrations
  (leave-one-out: one demo is the dummy query, the others its context — Hendel et al.'s S + x').
- :func:`prompt_end`: per row, the position whose logits predict the first answer token (the
  "last token" of the papers), for inputs with and without the answer appended.
- :func:`module_output` / :func:`with_output`: a module's hidden states inside a forward hook's
  output, which is a tensor or a tuple whose first element is the tensor.
- :class:`PrefillPatch`: edits a module's output (or input) at given positions on the prefill
  forward only (the one that covers the whole prompt; cached decoding steps are left alone).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..backbones.base import IGNORE, AssembledBatch
from ..data import Episode
from .base import Handle


def dummy_query_contexts(episode: Episode, contexts: int) -> list[Episode]:
    """``contexts`` in-context prompts from ``episode``'s demos: the i-th of the last ``contexts``
    demos is the dummy query, the other demos (in order) its context.  The real query is never read."""
    k = episode.k
    if k < 2:
        raise ValueError(f"the vector is extracted from demonstrations (k - 1 in context + 1 dummy query): "
                         f"pick at least 2 demonstrations, got {k}")
    n = min(contexts, k)
    out = []
    for j in range(k - n, k):
        demos = [d for i, d in enumerate(episode.demos) if i != j]
        out.append(Episode(demos=demos, query=episode.demos[j], task=episode.task))
    return out


def prompt_end(batch: AssembledBatch) -> torch.Tensor:
    """(B,) per row: the position whose logits predict the first answer token — the one before
    the first labelled position where the answer is in the input, else the last real position."""
    mask = batch.attention_mask  # (B, T)
    T = mask.shape[1]
    ar = torch.arange(T, device=mask.device)
    last_real = torch.where(mask.bool(), ar, -1).max(1).values  # (B,)
    labelled = batch.labels != IGNORE  # (B, T)
    first_label = torch.where(labelled, ar, T).min(1).values  # (B,)
    return torch.where(labelled.any(1), first_label - 1, last_real)


def module_output(out) -> torch.Tensor:
    """The hidden states in a forward hook's ``out`` (a tensor or a tuple starting with one)."""
    return out[0] if isinstance(out, tuple) else out


def with_output(out, hidden: torch.Tensor):
    """``out`` with its hidden states replaced by ``hidden`` (same container type)."""
    return (hidden, *out[1:]) if isinstance(out, tuple) else hidden


class PrefillPatch:
    """Write into ``module``'s output (``where='output'``) or its first input (``where='input'``)
    at the positions set by :meth:`set` — on the forward whose sequence length is the prompt's.

    ``edit(hidden (B, T, ...), rows (N,), positions (N,), values (N, ...)) -> hidden`` builds the
    new tensor (out of place, so it also works when a gradient is recorded)."""

    def __init__(self, module: nn.Module, edit: Callable, where: str = "output"):
        self.module, self.edit, self.where = module, edit, where
        self.pending: tuple[int, torch.Tensor, torch.Tensor] | None = None  # (T, positions (B,), values (B, ...))

    def set(self, seq_len: int, positions: torch.Tensor, values: torch.Tensor) -> None:
        self.pending = (seq_len, positions, values)

    def clear(self) -> None:
        self.pending = None

    def _apply(self, hidden: torch.Tensor) -> torch.Tensor | None:
        if self.pending is None or hidden.shape[1] != self.pending[0]:
            return None  # not the prefill of the patched prompt (extraction, or a cached decoding step)
        _, pos, vals = self.pending
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return self.edit(hidden, rows, pos.to(hidden.device), vals.to(hidden.device, hidden.dtype))

    def install(self) -> list[Handle]:
        if self.where == "output":
            def hook(mod, args, out):
                new = self._apply(module_output(out))
                return None if new is None else with_output(out, new)

            h = self.module.register_forward_hook(hook)
        else:
            def hook(mod, args):
                new = self._apply(args[0])
                return None if new is None else (new, *args[1:])

            h = self.module.register_forward_pre_hook(hook)
        return [Handle(h.remove), Handle(self.clear)]


def replace_at(hidden: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """hidden (B, T, d) with hidden[b, pos[b]] = values[b].  Out of place."""
    out = hidden.clone()
    out[rows, pos] = values
    return out


def add_at(hidden: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """hidden (B, T, d) with values[b] added at hidden[b, pos[b]].  Out of place."""
    out = hidden.clone()
    out[rows, pos] = out[rows, pos] + values
    return out


__all__ = ["PrefillPatch", "add_at", "dummy_query_contexts", "module_output", "prompt_end", "replace_at", "with_output"]
