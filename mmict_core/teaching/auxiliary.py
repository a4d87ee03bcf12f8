"""Auxiliary losses of the episode stage, on binding episodes only, and the hooks they read.

Binding needs an induction-style circuit: the demo's *answer* position must carry the colour of
the image before it (the key), and one head must look from the query's answer position to the
earlier answers of the same colour and copy the word found there.  From the next-token loss alone
the 4-layer LM stays on the copy-a-shown-word plateau; these two losses supply exactly those two
pieces.  Neither names the bound word (fresh in every episode), so what the model does at test time
is still in-context learning: the losses show it where to look.

A third, optional loss (``copy_loss``) supervises what the matching head *writes*: its own output at
the answer-predicting position, read straight through the final norm's gain and ``lm_head`` (the
direct path), should name the word it looks at.  The word is the episode's fresh one, found only in
the demonstrations: the loss asks the head to copy, it does not teach any binding.

Each capture is a context manager that always removes its hook (and restores the attention
implementation), whatever happens inside.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from ..data import shapes as sw
from .episodes import unpredictable_items


@contextlib.contextmanager
def residual_capture(vlm, layer: int) -> Iterator[dict]:
    """``store['h']``: the residual stream after decoder layer ``layer`` (1-based count), (B, T, d),
    refreshed on every forward while the context is open."""
    store: dict = {}
    hook = vlm.decoder_layers()[layer - 1].register_forward_hook(
        lambda mod, args, out: store.__setitem__("h", out[0] if isinstance(out, tuple) else out))
    try:
        yield store
    finally:
        hook.remove()


@contextlib.contextmanager
def attention_capture(vlm, layer: int) -> Iterator[dict]:
    """``store['p']``: attention probabilities of decoder layer ``layer`` (0-based), (B, H, T, T).
    Switches the LM to eager attention (the one that returns probabilities) while open."""
    tc = vlm.text_config
    old = tc._attn_implementation
    store: dict = {}
    tc._attn_implementation = "eager"
    hook = vlm.attention(layer).register_forward_hook(lambda mod, args, out: store.__setitem__("p", out[1]))
    try:
        yield store
    finally:
        hook.remove()
        tc._attn_implementation = old


@contextlib.contextmanager
def head_output_capture(vlm, layer: int) -> Iterator[dict]:
    """``store['z']``: the input of decoder layer ``layer``'s (0-based) output projection -- every head's
    attention output side by side, (B, T, H * head_dim) -- refreshed on every forward while open."""
    store: dict = {}
    hook = vlm.attention(layer).o_proj.register_forward_pre_hook(lambda mod, args: store.__setitem__("z", args[0]))
    try:
        yield store
    finally:
        hook.remove()


def colour_key_targets(batch, episodes) -> tuple[list[int], list[int], list[int]]:
    """Rows, positions and colour indices for the key loss: in binding episodes, every item's
    answer-marker positions and the first position of its answer."""
    colours = list(sw.COLOURS)
    rows, pos, lab = [], [], []
    for b, ep in enumerate(episodes):
        if ep.task != "binding":
            continue
        for i, ex in enumerate(list(ep.demos) + [ep.query]):
            if ex.label not in colours:
                continue
            at = batch.positions(b, "marker", i) + batch.positions(b, "answer", i)[:1]
            rows += [b] * len(at)
            pos += at
            lab += [colours.index(ex.label)] * len(at)
    return rows, pos, lab


def binding_match_targets(batch, episodes) -> list[tuple[int, int, list[int]]]:
    """``(row, query position, key positions)`` for the match loss: for every predictable binding
    answer (its colour shown before), the position that predicts its first token and the first
    answer positions of the earlier items of the same colour — where an induction head should look."""
    out = []
    for b, ep in enumerate(episodes):
        if ep.task != "binding":
            continue
        items = list(ep.demos) + [ep.query]
        skip = unpredictable_items(ep)
        for i, ex in enumerate(items):
            if i in skip:
                continue
            ans = batch.positions(b, "answer", i)
            keys = [batch.positions(b, "answer", j)[0] for j in range(i) if items[j].label == ex.label]
            if ans and keys:
                out.append((b, ans[0] - 1, keys))
    return out


class KeyLoss(nn.Module):
    """A throw-away linear read-out of the colour from the residual stream (not saved with the model)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.head = nn.Linear(d_model, len(sw.COLOURS))

    def forward(self, h: torch.Tensor, batch, episodes) -> torch.Tensor | None:
        rows, pos, lab = colour_key_targets(batch, episodes)
        if not rows:
            return None
        return nn.functional.cross_entropy(self.head(h[rows, pos]), torch.tensor(lab, device=h.device))  # (n, d) -> (n, 6)


def match_loss(p: torch.Tensor, head: int, batch, episodes) -> torch.Tensor | None:
    """-log of the attention mass head ``head`` puts on same-colour earlier answers, averaged."""
    targets = binding_match_targets(batch, episodes)
    if not targets:
        return None
    probs = p[:, head]  # (B, T, T)
    mass = torch.stack([probs[b, q, keys].sum() for b, q, keys in targets])  # (n,)
    return -torch.log(mass.clamp(min=1e-6)).mean()


def head_direct_logits(vlm, layer: int, head: int, z: torch.Tensor) -> torch.Tensor:
    """Logits that head ``head`` of decoder layer ``layer`` writes on its own: its slice of the output
    projection, times the final norm's gain, times ``lm_head`` (no other head, layer or normalisation).
    z: (..., H * head_dim) -> (..., V)"""
    attn = vlm.attention(layer)
    hd = vlm.head_dim
    w_o = attn.o_proj.weight[:, head * hd:(head + 1) * hd]  # (d, hd)
    out = z[..., head * hd:(head + 1) * hd] @ w_o.T  # (..., d)
    lm = vlm.language_model
    gain = lm.get_decoder().norm.weight  # (d,)
    return lm.get_output_embeddings()(out * gain)  # (..., V)


def copy_loss(vlm, z: torch.Tensor, layer: int, head: int, batch, episodes) -> torch.Tensor | None:
    """Cross-entropy of head ``head``'s direct logits at each match target's query position against
    the first token of the answer it predicts (the word shown by the same-colour demos)."""
    targets = binding_match_targets(batch, episodes)
    if not targets:
        return None
    rows = [b for b, _, _ in targets]
    qs = [q for _, q, _ in targets]
    gold = batch.token_ids[rows, [q + 1 for q in qs]]  # (n,) first answer token
    logits = head_direct_logits(vlm, layer, head, z[rows, qs])  # (n, H*hd) -> (n, V)
    return nn.functional.cross_entropy(logits.float(), gold)
