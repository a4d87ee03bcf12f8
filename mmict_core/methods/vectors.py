"""Shared pieces of the activation-vector methods (the training-free vector family and its relatives).

These methods read the k-shot context once ("extraction": a forward of the bare backbone over
in-context prompts ending in a dummy query), and then run the query at zero shots with a vector
written into one position of the residual stream or of an attention head ("patching").

- :func:`dummy_query_contexts`: the in-context prompts built from an episode's demonstrations
  (leave-one-out: one demo is the dummy query, the others its context — Hendel et al.'s S + x'; or
  the demos cut into consecutive prompts, for many shots beyond one context).
- :func:`prompt_end`: per row, the position whose logits predict the first answer token (the
  "last token" of the papers), for inputs with and without the answer appended.
- :func:`module_output` / :func:`with_output`: a module's hidden states inside a forward hook's
  output, which is a tensor or a tuple whose first element is the tensor.
- :class:`PrefillPatch`: edits a module's output (or input) at given positions on the prefill
  forward only (the one that covers the whole prompt; cached decoding steps are left alone).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn

from ..backbones.base import IGNORE, AssembledBatch
from ..data import Episode
from .base import Handle


def dummy_query_contexts(episode: Episode, contexts: int, per_context: int = 0) -> list[Episode]:
    """In-context prompts built from ``episode``'s demos, each ending in a dummy query (a demo); the
    real query is never read.

    ``per_context = 0`` (leave-one-out): ``contexts`` prompts; the i-th of the last ``contexts`` demos
    is the dummy query, all the other demos (in order) its context.
    ``per_context = n > 0`` (many-shot across contexts, as MTV's iterations): the demos cut into
    consecutive chunks of n, the last demo of each chunk its dummy query and the n - 1 before it its
    context; the first ``contexts`` whole chunks (demos after them are not read)."""
    k = episode.k
    if per_context:
        if per_context < 2:
            raise ValueError(f"per_context is the demos per prompt, {per_context} - 1 in context + 1 dummy query: "
                             "pick at least 2 (or 0 for leave-one-out prompts)")
        if k < per_context:
            raise ValueError(f"prompts of {per_context} demonstrations need at least {per_context} demonstrations, got {k}")
        n = min(contexts, k // per_context)
        chunks = [episode.demos[i * per_context:(i + 1) * per_context] for i in range(n)]
        return [Episode(demos=list(c[:-1]), query=c[-1], task=episode.task) for c in chunks]
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


class HeadPatch:
    """Per-head access at every layer's output projection (its input holds the heads side by side,
    (R, T, H·d_h); found through ``backbone.out_proj(l)``).

    ``record``: a dict with ``'pos'`` (R,); each forward stores ``record[l] = x[r, pos[r]]`` as
    (R, H, d_h) fp32.  ``set(seq_len, row, pos, layer, head, values)``: on forwards of length
    ``seq_len`` only (the prefill), write ``values[e]`` (d_h) into head ``head[e]`` of row ``row[e]`` at
    ``pos[e]`` of layer ``layer[e]``."""

    def __init__(self, backbone, record: dict | None = None):
        self.backbone, self.record = backbone, record
        self.pending: tuple | None = None

    def set(self, seq_len: int, row: torch.Tensor, pos: torch.Tensor, layer: torch.Tensor, head: torch.Tensor,
            values: torch.Tensor) -> None:
        self.pending = (seq_len, row, pos, layer, head, values)

    def clear(self) -> None:
        self.pending = None

    def _hook(self, l: int, x: torch.Tensor) -> torch.Tensor | None:
        H, d = self.backbone.num_heads, self.backbone.head_dim
        if self.record is not None:
            rows = torch.arange(x.shape[0], device=x.device)
            self.record[l] = x[rows, self.record["pos"].to(x.device)].detach().float().view(-1, H, d)
        if self.pending is None or (self.pending[0] is not None and x.shape[1] != self.pending[0]):
            return None
        _, row, pos, layer, head, values = self.pending
        sel = (layer == l).nonzero().flatten()
        if not len(sel):
            return None
        x = x.clone()
        view = x.view(*x.shape[:2], H, d)  # (R, T, H, d) sharing x's storage
        view[row[sel].to(x.device), pos[sel].to(x.device), head[sel].to(x.device)] = values[sel].to(x.device, x.dtype)
        return x

    def install(self) -> list[Handle]:
        handles = []
        for l in range(self.backbone.num_layers):
            h = self.backbone.out_proj(l).register_forward_pre_hook(lambda mod, args, l=l: (
                None if (new := self._hook(l, args[0])) is None else (new, *args[1:])))
            handles.append(Handle(h.remove))
        return handles + [Handle(self.clear)]


@contextlib.contextmanager
def head_slots(backbone, record: dict | None = None, writes: tuple | None = None) -> Iterator[HeadPatch]:
    """A :class:`HeadPatch` installed for the block; ``writes = (row, pos, layer, head, values)``
    applies to every forward of the block (any length)."""
    patch = HeadPatch(backbone, record)
    handles = patch.install()
    try:
        if writes is not None:
            patch.pending = (None, *writes)  # None: every forward length
        yield patch
    finally:
        for h in reversed(handles):
            h.remove()


def head_contribution(backbone, layer: int, z: torch.Tensor) -> torch.Tensor:
    """Each head's share of the residual stream, W_O[:, j] z_j: out_proj of the input with only
    head j's slot filled, minus out_proj(0) (its bias) — valid for quantised layers whose weight
    cannot be sliced.  z (..., H, d_h) -> (..., H, d) fp32"""
    H, d = backbone.num_heads, backbone.head_dim
    o = backbone.out_proj(layer)
    eye = torch.eye(H, device=z.device, dtype=z.dtype)  # (H, H)
    x = (eye[:, :, None] * z.unsqueeze(-3)).reshape(*z.shape[:-2], H, H * d)  # (..., H, H·d): row j = slot j only
    dt = backbone.language_model.get_input_embeddings().weight.dtype  # the LM's compute dtype (never quantised)
    x = x.to(backbone.device, dt)
    return (o(x) - o(torch.zeros_like(x[..., :1, :]))).float()


def answer_prob(logits: torch.Tensor, batch: AssembledBatch) -> torch.Tensor:
    """P(first answer token) at each row's prompt end (the batch carries the answer).  (R,)"""
    pos = prompt_end(batch)
    rows = torch.arange(logits.shape[0])
    target = batch.labels[rows, pos.cpu() + 1]
    return logits[rows, pos].float().softmax(-1)[rows, target]


def _repeat(batch: AssembledBatch, n: int) -> AssembledBatch:
    """``batch`` stacked ``n`` times (copy-major: rows r, r + R, ...)."""
    rep = lambda t: t.repeat(n, *[1] * (t.dim() - 1))  # noqa: E731
    return AssembledBatch(rep(batch.inputs_embeds), rep(batch.attention_mask), rep(batch.labels), rep(batch.token_ids),
                          [batch.spans[i % len(batch.spans)] for i in range(n * len(batch.spans))])


@torch.no_grad()
def head_effects(backbone, batch: AssembledBatch, values: torch.Tensor, max_rows: int = 256) -> torch.Tensor:
    """Causal effect of every head: P(y | row n, head (l, j) at the prompt end := values[n, l, j])
    − P(y | row n), y the row's first answer token.  batch: N rows with answers; values
    (N, L, H, d_h) -> (N, L, H).  Batched: one row per (head, prompt), ``max_rows`` per forward."""
    N, L, H = values.shape[:3]
    base = answer_prob(backbone.forward(batch), batch)  # (N,)
    heads = [(l, j) for l in range(L) for j in range(H)]
    effect = torch.zeros(N, L * H)
    per = max(1, max_rows // N)
    for s in range(0, len(heads), per):
        chunk = heads[s:s + per]
        big = _repeat(batch, len(chunk))  # (len(chunk)·N rows)
        lay = torch.tensor([l for l, _ in chunk]).repeat_interleave(N)
        head = torch.tensor([j for _, j in chunk]).repeat_interleave(N)
        prompt = torch.arange(N).repeat(len(chunk))
        with head_slots(backbone, writes=(torch.arange(len(prompt)), prompt_end(big), lay, head, values[prompt, lay, head])):
            p = answer_prob(backbone.forward(big), big)  # (R,)
        effect[:, s:s + len(chunk)] = (p - base.repeat(len(chunk))).view(len(chunk), N).T.cpu()
    return effect.view(N, L, H)


__all__ = ["HeadPatch", "answer_prob", "head_effects", "PrefillPatch", "head_contribution", "head_slots", "add_at", "dummy_query_contexts", "module_output", "prompt_end", "replace_at", "with_output"]
