"""A bounded cache of image encodings, used while a :func:`use_encoding_cache` block is active.

:meth:`VLMBackbone.encode_items` consults the cache of the current context (a ``ContextVar``, so
concurrent sessions in threads never see each other's).  One entry is one ``encode_items`` call:
the key is the list of its items (sha256 of each image's bytes, shape and dtype, plus the
instruction it is encoded with) and the state of the backbone's vision side.  A whole call, not
each image, because the image encoders are not batch-invariant: the teaching VLM's Q-Former gives
an image a different last bit in a batch of 9 than alone (max |diff| ~2e-6), so per-image reuse
across different batches would change logits; reusing a whole call's output is bit-identical to
encoding again.  (The plain-ICL methods and every 0-demo adapter of one Compare share the calls.)

The vision state is the backbone object plus, for every parameter outside its language model,
its identity and in-place version counter: a method that swaps vision parts in while attached
(MMICT's M-Hub copies) gets its own entries, and an optimiser step or a weight load invalidates
the entries computed before.  Another backbone clears the cache.  Only used with gradients off
(cached tensors carry no graph).
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import threading
from collections import OrderedDict
from typing import Iterator, Sequence

import numpy as np
import torch

_ACTIVE: contextvars.ContextVar["EncodingCache | None"] = contextvars.ContextVar("mmict_encoding_cache", default=None)


def image_key(image: np.ndarray) -> str:
    """sha256 of an image's bytes, shape and dtype."""
    a = np.ascontiguousarray(image)
    h = hashlib.sha256(f"{a.shape}|{a.dtype}|".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def vision_state(backbone) -> tuple:
    """(id, in-place version) of every model parameter outside the language model."""
    lm = {id(p) for p in backbone.language_model.parameters()}
    return tuple((id(p), p._version) for p in backbone.model.parameters() if id(p) not in lm)


class EncodingCache:
    """LRU of ``encode_items`` results, at most ``max_entries`` calls and ``max_bytes`` of tensors."""

    def __init__(self, max_entries: int = 32, max_bytes: int = 256 * 2**20):
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        self.max_entries, self.max_bytes = int(max_entries), int(max_bytes)
        self._items: OrderedDict[tuple, tuple[list[torch.Tensor], int]] = OrderedDict()
        self._backbone_id: int | None = None
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return sum(n for _, n in self._items.values())

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def key(self, backbone, items: Sequence) -> tuple:
        return (vision_state(backbone),
                tuple((tuple(image_key(im) for im in ex.images), ex.prompt) for ex in items))

    def _bind(self, backbone) -> None:
        if self._backbone_id != id(backbone):  # the session's backbone changed: nothing carries over
            self._items.clear()
            self._backbone_id = id(backbone)

    def get(self, backbone, key: tuple) -> list[torch.Tensor] | None:
        with self._lock:
            self._bind(backbone)
            hit = self._items.get(key)
            if hit is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return list(hit[0])

    def put(self, backbone, key: tuple, feats: list[torch.Tensor]) -> None:
        n = sum(t.numel() * t.element_size() for t in feats)
        if n > self.max_bytes:
            return
        with self._lock:
            self._bind(backbone)
            self._items[key] = ([t.detach() for t in feats], n)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries or self.nbytes > self.max_bytes:
                self._items.popitem(last=False)


def active_cache() -> EncodingCache | None:
    """The cache of the current context, or None (no caching)."""
    return _ACTIVE.get()


@contextlib.contextmanager
def use_encoding_cache(cache: EncodingCache | None) -> Iterator[EncodingCache | None]:
    """Image encodings inside the block go through ``cache`` (None: no caching)."""
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)
