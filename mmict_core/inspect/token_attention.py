"""Token × token attention of one episode, per layer and head, as the model runs it.

A thin recording wrapper is registered in transformers' attention registry: while it is selected,
each decoder attention call goes to the implementation that was active (the stock one, or an
adapter's own function such as HiFICL's) and the query and keys it received (after RoPE) and its
mask are kept.  The weights are then ``softmax(s·q·kᵀ + mask)`` per head.  For an adapter with
virtual slots (the attention-capture protocol) the real keys share only α of each row: its weights
are ``α · softmax(real scores)``, the real-key part of its softmax over [virtual; real] keys, so a row
sums to α and ``1 − α`` is on the virtual slots.
"""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass

import numpy as np
import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ..data import Episode
from ..methods.base import captures_attention, swap_attr
from .virtual_kv import token_table

RECORD_NAME = "mmict_record_qk"
_STATE: dict = {"inner": None, "layers": {}, "store": None}  # the active recording (one at a time)


@dataclass
class TokenAttention:
    """One episode's attention over its own tokens.  L layers, H heads, T positions."""

    weights: np.ndarray  # (L, H, T, T) row t: position t's attention on key positions (rows sum to 1, or to α)
    virtual_mass: np.ndarray | None  # (L, H, T) the share on virtual slots (1 − α), None without any
    roles: np.ndarray  # (T,) str
    items: np.ndarray  # (T,) int
    labels: np.ndarray  # (T,) str
    token_ids: np.ndarray  # (T,) int

    @property
    def shape(self) -> tuple[int, int, int]:
        """(L, H, T)"""
        return tuple(self.weights.shape[:3])  # type: ignore[return-value]


def _inner(module: torch.nn.Module, name: str | None):
    if name in (None, "eager"):  # eager is the model file's own function
        return getattr(sys.modules[type(module).__module__], "eager_attention_forward")
    return ALL_ATTENTION_FUNCTIONS[name]


def _record_attention(module, query, key, value, attention_mask, **kwargs):
    out = _inner(module, _STATE["inner"])(module, query, key, value, attention_mask, **kwargs)
    layer = _STATE["layers"].get(id(module))
    if layer is not None and _STATE["store"] is not None:
        _STATE["store"][layer] = (query.detach(), key.detach(), attention_mask, kwargs.get("scaling"))
    return out


def _record_mask(*args, **kwargs):
    return ALL_MASK_ATTENTION_FUNCTIONS[_STATE["inner"] or "eager"](*args, **kwargs)


AttentionInterface.register(RECORD_NAME, _record_attention)
AttentionMaskInterface.register(RECORD_NAME, _record_mask)


@contextlib.contextmanager
def recording_qk(backbone):
    """While the block runs, each decoder layer's (query, key, mask, scaling) goes into the yielded
    dict by layer index; the backbone's own attention (or the attached adapter's) computes the output."""
    tc = backbone.text_config
    if _STATE["store"] is not None:
        raise RuntimeError("a token-attention recording is already running")
    store: dict = {}
    _STATE.update(inner=tc._attn_implementation, store=store,
                  layers={id(backbone.attention(i)): i for i in range(backbone.num_layers)})
    swap = swap_attr(tc, "_attn_implementation", RECORD_NAME)
    try:
        yield store
    finally:
        swap.remove()
        _STATE.update(inner=None, store=None, layers={})


def head_weights(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scaling: float | None) -> torch.Tensor:
    """softmax(s·q·kᵀ + mask) of the first sequence, per head.  query (B, H, T, d), key (B, H_kv, T_k, d),
    mask bool (True = attend) / additive / None (causal) -> (H, T, T_k) float64"""
    q, k = query[0].double(), key[0].double()  # (H, T, d), (H_kv, T_k, d)
    H, T, d = q.shape
    k = k.repeat_interleave(H // k.shape[0], 0)  # GQA: each key head serves H / H_kv query heads
    s = q @ k.transpose(-1, -2) * (d ** -0.5 if scaling is None else scaling)  # (H, T, T_k)
    if mask is None:  # what the stock attention does without a mask: causal when T > 1
        visible = torch.ones(T, k.shape[1], dtype=torch.bool).tril(k.shape[1] - T)
        s = s.masked_fill(~visible, float("-inf"))
    elif mask.dtype == torch.bool:
        s = s.masked_fill(~mask[0, :, :, : k.shape[1]], float("-inf"))
    else:
        s = s + mask[0, :, :, : k.shape[1]].double()
    return torch.softmax(s, -1)


@torch.no_grad()
def token_attention(method, episode: Episode, *, with_answer: bool = True) -> TokenAttention:
    """Run ``episode`` as ``method`` sees it (its adapter attached) and return its token × token attention."""
    bb = method.backbone
    batch = method.batch([episode], with_answer=with_answer, padding_side="right")
    virtual = captures_attention(method)
    with method.attached(), (method.capture() if virtual else contextlib.nullcontext({})) as cap, \
            recording_qk(bb) as rec:
        bb.forward(batch)
    L = bb.num_layers
    weights = torch.stack([head_weights(*rec[l]) for l in range(L)])  # (L, H, T, T)
    vm = None
    if virtual:
        alpha = torch.stack([cap[l][0][0] for l in range(L)]).double()  # (L, H, T)
        weights = weights * alpha.unsqueeze(-1)  # the real keys' part of the softmax over [virtual; real]
        vm = (1.0 - alpha).float().numpy()
    roles, items, labels, ids = token_table(bb, batch)
    return TokenAttention(weights=weights.float().numpy(), virtual_mass=vm, roles=roles, items=items, labels=labels,
                          token_ids=ids)
