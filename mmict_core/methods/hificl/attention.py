"""HiFICL's attention, one implementation for every decoder, through transformers' attention registry.

Every v5 decoder attention module projects q/k/v, applies RoPE, updates the KV cache, then calls
``ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, ...)(self, q, k, v, mask,
scaling=..., dropout=..., **kw)`` and applies ``o_proj`` to the ``(B, T, H, d_h)`` result.  Attaching
HiFICL sets the *text* config's ``_attn_implementation`` to :data:`ATTN_NAME`; the vision tower and
the Q-Former have their own configs and never reach this function.

The function finds its layer's adapter through the shared override mechanism
(:func:`..attention.bound`: keyed by ``id(module)``, filled on attach and emptied on detach), computes the normal causal attention with the stock function, and
mixes in the virtual keys/values with the exact softmax weights:

    log Z2 = logsumexp_j s·q·k_j     (real keys; 'masked': causal + padding mask; 'faithful': all keys)
    S_D    = s·q·K_learnᵀ            log Z1 = logsumexp_n S_D
    α      = exp(log Z2 − logaddexp(log Z1, log Z2))
    w      = exp(S_D − logaddexp(log Z1, log Z2))
    out    = α·SA(q, K, V) + w·V_learn

Two paths compute this.  With z2='masked' the mix is exactly softmax attention over
``[K_learn ; K]`` and ``[V_learn ; V]`` with the virtual keys always visible (spec §9.3), so the
*fused* path prepends the virtual keys/values and makes one scaled-dot-product-attention call
(one kernel, no second q·Kᵀ for log Z2, no separate mixing).  The *split* path above is the
original formulation; it is used for z2='faithful' (an unmasked Z2 is not a softmax over the
sequence's visible keys), while α and w are being captured, and when ``attention_path='split'``
is set on the adapter (the reference the benchmarks time the fused path against).  A decode step
(one query position) of the fused path runs :func:`decode_attention`: the same softmax without
copying the KV cache.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import torch
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from ..attention import BOUND, bound, register_attention

if TYPE_CHECKING:  # pragma: no cover
    from . import HiFICL

ATTN_NAME = "mmict_hificl"
ATTENTION_PATHS = ("auto", "split")  # auto: fused where the math allows (z2='masked', no capture)
_NEG = torch.finfo(torch.float32).min  # masked score: exp() is exactly 0, and never NaN in backward

_LAYERS = BOUND  # id(attention module) -> (adapter, layer index, the implementation it replaced); shared


def hificl_mask(*args, **kwargs):
    """The mask the LM builds while HiFICL is attached: exactly ``sdpa_mask``, a (B, 1, T, T_k) bool
    mask (True = attend) — or None where the stock sdpa would rely on ``is_causal`` (no padding), so
    that common case costs no mask at all; :func:`implicit_mask` spells it out where one is needed."""
    return sdpa_mask(*args, **kwargs)


def implicit_mask(q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
    """What a None mask means to the stock sdpa (``is_causal = q_len > 1``, torch's top-left
    alignment): query t sees keys <= t when q_len > 1, every key when q_len == 1.  transformers
    hands None only when that is the right mask (q_len == 1, q_len == k_len, or a prefill into an
    empty static cache).  (1, 1, T, T_k) bool"""
    if q_len == 1:
        return torch.ones(1, 1, 1, k_len, dtype=torch.bool, device=device)
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril()[None, None]


causal_mask = implicit_mask  # the earlier name


def _stock_attention(module: torch.nn.Module, base: str | None):
    """(function, wants an additive float mask) for the implementation HiFICL replaced.

    'eager' is the model file's own ``eager_attention_forward``; everything else runs through sdpa
    (flash/flex kernels take other mask formats, and the result is the same attention)."""
    if base in (None, "eager"):
        fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if fn is not None:
            return fn, True
    return sdpa_attention_forward, False


def masked_scores(s: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scores with the attention mask applied: bool (True = keep) or additive float."""
    if mask.dtype == torch.bool:
        return s.masked_fill(~mask, _NEG)
    return s + mask.float()


def hificl_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                             **kwargs) -> tuple[torch.Tensor, None]:
    """query (B, H, T, d); key/value (B, H_kv, T_k, d), post-RoPE and cached -> ((B, T, H, d), None)."""
    entry = bound(module)
    if entry is None:
        raise RuntimeError(f"{type(module).__name__} called the HiFICL attention function but no HiFICL adapter is "
                           f"attached to it; attach through `with method.attached():`")
    method, layer, base = entry
    B, H, T, d = query.shape
    T_k = key.shape[2]
    scaling = d ** -0.5 if scaling is None else scaling
    if attention_mask is not None and attention_mask.shape[-1] != T_k:
        attention_mask = attention_mask[..., :T_k]  # static caches may hand a longer mask
    if method.config.z2 == "masked" and method._capture is None and method.attention_path == "auto":
        return _fused(method, layer, query, key, value, attention_mask, scaling, dropout)
    if attention_mask is None:  # the split path needs the mask itself (masked Z2, eager's additive mask)
        attention_mask = implicit_mask(T, T_k, query.device)
    return _split(module, method, layer, base, query, key, value, attention_mask, scaling, dropout, **kwargs)


def _fused(method: "HiFICL", layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
           attention_mask: torch.Tensor | None, scaling: float, dropout: float) -> tuple[torch.Tensor, None]:
    """z2='masked': one SDPA call over [K_learn ; K], [V_learn ; V], the virtual keys always visible.

    softmax over the concatenation = Z2/(Z1+Z2)·softmax(real) + exp(s·q·K_learnᵀ)/(Z1+Z2) on the
    virtual slots, i.e. α·SA_out + w·V_learn with the masked Z2 — the same numbers as the split
    path, in one kernel.  query (B, H, T, d); key/value (B, H_kv, T_k, d) -> ((B, T, H, d), None)."""
    B, H, T, _ = query.shape
    if T == 1 and dropout == 0.0:  # a decode step: no copy of the KV cache (see decode_attention)
        kv_dtype = query.dtype if query.dtype in (torch.float32, torch.float64) else torch.float32
        K, V = method._layer_kv(layer, query.device, kv_dtype)  # (1, H, n, d) each
        return decode_attention(query, key, value, K, V, attention_mask, scaling).transpose(1, 2).contiguous(), None
    dtype = in_dtype = query.dtype
    if dtype not in (torch.float32, torch.float64):  # half precision: fp32, as the split path
        dtype = torch.float32
        query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
    K, V = method._layer_kv(layer, query.device, dtype)  # (1, H, n, d) each
    if B != 1:
        K, V = K.expand(B, -1, -1, -1), V.expand(B, -1, -1, -1)
    n_rep = H // key.shape[1]
    if n_rep != 1:
        key, value = repeat_kv(key, n_rep), repeat_kv(value, n_rep)
    mask = method._fused_mask(attention_mask, K.shape[2], dtype, T, key.shape[2], query.device)  # additive or None
    out = virtual_softmax_attention(query, key, value, K, V, mask, scaling, dropout)  # (B, H, T, d)
    return out.transpose(1, 2).contiguous().to(in_dtype), None


def virtual_softmax_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, K: torch.Tensor,
                              V: torch.Tensor, mask: torch.Tensor | None, scaling: float,
                              dropout: float = 0.0) -> torch.Tensor:
    """One softmax over the scores against ``[K ; key]`` mixing ``[V ; value]``: the virtual slots
    compete with the real keys for the same attention mass.  query (B, H, T, d); key/value
    (B, H, T_k, d) (GQA heads already repeated); K/V (B, H, n, d); ``mask`` additive (…, T, n + T_k)
    with the n virtual columns visible (:func:`prefix_visible`), or None -> (B, H, T, d)"""
    k = torch.cat([K, key], 2)  # (B, H, n + T_k, d)
    v = torch.cat([V, value], 2)
    return torch.nn.functional.scaled_dot_product_attention(query, k, v, attn_mask=mask, dropout_p=dropout,
                                                            scale=scaling)  # (B, H, T, d)


def decode_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, K: torch.Tensor, V: torch.Tensor,
                     mask: torch.Tensor | None, scaling: float) -> torch.Tensor:
    """The same softmax over ``[K ; key]`` as :func:`virtual_softmax_attention`, for one query position,
    without copying the KV cache: query heads grouped over their key/value head (no ``repeat_kv``), the
    cache's scores and mix in its own dtype (no cast), the virtual slots joined on the scores (no
    ``torch.cat`` of keys), the softmax in fp32.  At a 4k context the copies cost more than the step.
    query (B, H, 1, d); key/value (B, H_kv, T_k, d); K/V (1 or B, H, n, d) in fp32 or the query's
    dtype; ``mask`` bool (True = visible) or additive, broadcastable to (B, 1, 1, T_k), or None
    -> (B, H, 1, d) in the query's dtype"""
    B, H, _, d = query.shape
    H_kv, n = key.shape[1], K.shape[2]
    rep = H // H_kv
    q = query.reshape(B, H_kv, rep, d)  # (B, H_kv, rep, d): the query heads of each kv head
    s_real = (q @ key.transpose(-1, -2)).float() * scaling  # (B, H_kv, rep, T_k)
    if mask is not None:
        m = mask[..., -1:, :]  # (B, 1, 1, T_k): the last query row
        s_real = s_real.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else s_real + m.float()
    s_virt = (query.to(K.dtype) @ K.transpose(-1, -2)).float() * scaling  # (B, H, 1, n)
    p = torch.softmax(torch.cat([s_virt.reshape(B, H_kv, rep, n), s_real], -1), -1)  # (B, H_kv, rep, n + T_k)
    real = p[..., n:].to(value.dtype) @ value  # (B, H_kv, rep, d)
    virt = p[..., :n].reshape(B, H, 1, n).to(V.dtype) @ V  # (B, H, 1, d)
    return (real.reshape(B, H, 1, d).float() + virt.float()).to(query.dtype)


def softmax_split(real_scores: torch.Tensor, virtual_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The softmax over [virtual ; real] scores split into α, the real keys' total share, and w,
    each virtual slot's share (α + Σ w = 1).  real_scores (…, T_k) already masked; virtual_scores
    (…, n) -> (α (…), w (…, n))"""
    log_z2 = real_scores.logsumexp(-1)  # (…)
    log_den = torch.logaddexp(virtual_scores.logsumexp(-1), log_z2)  # (…)
    return (log_z2 - log_den).exp(), (virtual_scores - log_den.unsqueeze(-1)).exp()


def prefix_visible(mask: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    """``mask`` (..., T, T_k) — bool (True = visible) or additive — as an additive ``dtype`` mask
    with ``n`` always-visible key columns in front.  (..., T, n + T_k)

    Additive, so SDPA does not convert a boolean mask again in every layer; -inf is safe because
    the virtual columns leave no row fully masked."""
    if mask.dtype == torch.bool:
        add = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))
    else:  # additive float mask: 0 = visible
        add = mask.to(dtype)
    front = torch.zeros((*mask.shape[:-1], n), dtype=dtype, device=mask.device)
    return torch.cat([front, add], -1)


def _split(module: torch.nn.Module, method: "HiFICL", layer: int, base: str | None, query: torch.Tensor,
           key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor, scaling: float, dropout: float,
           **kwargs) -> tuple[torch.Tensor, None]:
    """The original formulation: stock attention, log Z2 from a second q·Kᵀ, then the mix."""
    B, H, T, d = query.shape

    # term 1: the backbone's own causal attention
    stock, wants_float = _stock_attention(module, base)
    stock_mask = attention_mask
    if wants_float and stock_mask.dtype == torch.bool:
        stock_mask = torch.zeros(stock_mask.shape, dtype=query.dtype, device=query.device).masked_fill(
            ~stock_mask, torch.finfo(query.dtype).min)
    sa_out, _ = stock(module, query, key, value, stock_mask, scaling=scaling, dropout=dropout, **kwargs)  # (B, T, H, d)

    # log Z2 over the real keys (GQA: keys repeated per query head, as the official code does)
    q = query.float()
    k = repeat_kv(key, H // key.shape[1]).float()  # (B, H, T_k, d)
    s = torch.matmul(q, k.transpose(-1, -2)) * scaling  # (B, H, T, T_k)
    if method.config.z2 == "masked":
        s = masked_scores(s, attention_mask)

    # virtual keys/values of this layer (computed once per forward call for all layers)
    K_all, V_all = method.virtual_kv()  # (L, H, n, d) each, fp32
    K, V = K_all[layer].to(q.device), V_all[layer].to(q.device)  # (H, n, d)
    s_d = torch.einsum("bhtd,hnd->bhtn", q, K) * scaling  # (B, H, T, n)
    alpha, w = softmax_split(s, s_d)  # (B, H, T), (B, H, T, n)

    out = alpha.transpose(1, 2).unsqueeze(-1) * sa_out.float()  # (B, T, H, d)
    out = out + torch.einsum("bhtn,hnd->bthd", w, V)  # (B, T, H, d)
    if method._capture is not None:
        method._capture[layer] = (alpha.detach(), w.detach())
    return out.to(query.dtype), None


# registered once, globally, under a name nothing else uses; inert until a config selects it
register_attention(ATTN_NAME, hificl_attention_forward, hificl_mask)
