"""One attention-override mechanism for every method that changes the decoder's attention.

A method that rewrites attention (HiFICL's virtual keys/values, MimIC's gated shift, and any new
one) registers one attention function with transformers' attention registry under its own name
(:func:`register_attention`), and attaches with :func:`install_attention`:

- the LM's text config must still use a stock implementation (another method's function would
  be bypassed silently otherwise) — refused with a clear error *before* anything changes;
- every decoder self-attention module, found through the backbone's own accessors
  (``backbone.attention(i)`` for ``i < backbone.num_layers``), is bound to ``(method, layer index,
  replaced implementation)`` in :data:`BOUND`;
- the text config's ``_attn_implementation`` is swapped to the method's name (the vision tower and
  the Q-Former have their own configs and never reach the function).

It returns the :class:`~.base.Handle` list that undoes all of it, so ``Method.attached()`` restores
the backbone bit-identically whatever happens inside the block.  The attention function finds its
layer with :func:`bound` (a dict lookup by module id).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from .base import Handle, swap_attr

if TYPE_CHECKING:  # pragma: no cover
    from .base import Method

# implementations a method's attention function can stand in for (eager itself; the rest through sdpa)
STOCK = (None, "eager", "sdpa", "flash_attention_2", "flash_attention_3", "flash_attention_4", "flex_attention")

# id(decoder attention module) -> (method, layer index, the implementation it replaced)
BOUND: dict[int, tuple["Method", int, str | None]] = {}

OVERRIDES: set[str] = set()  # names registered through register_attention


def register_attention(name: str, fn: Callable, mask_fn: Callable) -> None:
    """Register ``fn`` (and the mask builder ``mask_fn``) under ``name``: inert until attached."""
    AttentionInterface.register(name, fn)
    AttentionMaskInterface.register(name, mask_fn)
    OVERRIDES.add(name)


def bound(module: torch.nn.Module) -> tuple["Method", int, str | None] | None:
    """(method, layer, replaced implementation) of an attached decoder attention module, else None."""
    return BOUND.get(id(module))


def install_attention(method: "Method", name: str) -> list[Handle]:
    """Route every decoder self-attention of ``method.backbone`` to the function registered as
    ``name``, bound to ``method``; returns the handles that undo it (in reverse order)."""
    bb = method.backbone
    tc = bb.text_config
    base = tc._attn_implementation
    who = type(method).__name__
    if base in OVERRIDES:
        raise RuntimeError(f"{who} cannot attach: an attention adapter is already attached to this backbone "
                           f"(the LM's attention is already replaced by {base!r}); detach it first")
    if base not in STOCK:
        raise RuntimeError(f"{who} cannot attach: the LM's attention implementation is {base!r}, not a stock one "
                           f"({', '.join(map(str, STOCK))}); detach the method that set it first")
    attns = [bb.attention(i) for i in range(bb.num_layers)]
    if any(id(a) in BOUND for a in attns):  # checked before any change: a refusal leaves nothing behind
        raise RuntimeError(f"{who} cannot attach: a decoder layer already carries an attention adapter; detach it first")
    handles: list[Handle] = []
    for i, attn in enumerate(attns):
        BOUND[id(attn)] = (method, i, base)
        handles.append(Handle(lambda k=id(attn): BOUND.pop(k, None)))
    handles.append(swap_attr(tc, "_attn_implementation", name))  # every decoder attention reads it per forward
    return handles


__all__ = ["BOUND", "OVERRIDES", "STOCK", "bound", "install_attention", "register_attention"]
