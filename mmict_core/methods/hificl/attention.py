"""HiFICL's attention, one implementation for every decoder, through transformers' attention registry.

Every v5 decoder attention module projects q/k/v, applies RoPE, updates the KV cache, then calls
``ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, ...)(self, q, k, v, mask,
scaling=..., dropout=..., **kw)`` and applies ``o_proj`` to the ``(B, T, H, d_h)`` result.  Attaching
HiFICL sets the *text* config's ``_attn_implementation`` to :data:`ATTN_NAME`; the vision tower and
the Q-Former have their own configs and never reach this function.

The function finds its layer's adapter through :data:`_LAYERS` (keyed by ``id(module)``, filled on
attach and emptied on detach), computes the normal causal attention with the stock function, and
mixes in the virtual keys/values with the exact softmax weights:

    log Z2 = logsumexp_j s·q·k_j     (real keys; 'masked': causal + padding mask; 'faithful': all keys)
    S_D    = s·q·K_learnᵀ            log Z1 = logsumexp_n S_D
    α      = exp(log Z2 − logaddexp(log Z1, log Z2))
    w      = exp(S_D − logaddexp(log Z1, log Z2))
    out    = α·SA(q, K, V) + w·V_learn
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

if TYPE_CHECKING:  # pragma: no cover
    from . import HiFICL

ATTN_NAME = "mmict_hificl"
_NEG = torch.finfo(torch.float32).min  # masked score: exp() is exactly 0, and never NaN in backward

# id(attention module) -> (adapter, layer index, the implementation it replaced)
_LAYERS: dict[int, tuple["HiFICL", int, str | None]] = {}


def hificl_mask(*args, **kwargs):
    """``sdpa_mask``, always materialised: (B, 1, T, T_k) bool, True = attend.

    sdpa_mask returns None for unpadded causal input (sdpa then uses ``is_causal``); the masked Z2
    needs the mask itself, so the skip is turned off."""
    kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(*args, **kwargs)


def causal_mask(q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
    """Bottom-right aligned causal mask (query t sees keys <= t + k_len - q_len).  (1, 1, T, T_k) bool"""
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(k_len - q_len)[None, None]


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
    entry = _LAYERS.get(id(module))
    if entry is None:
        raise RuntimeError(f"{type(module).__name__} called the HiFICL attention function but no HiFICL adapter is "
                           f"attached to it; attach through `with method.attached():`")
    method, layer, base = entry
    B, H, T, d = query.shape
    T_k = key.shape[2]
    scaling = d ** -0.5 if scaling is None else scaling
    if attention_mask is None:  # a path that built no mask: plain causal, bottom-right for decode steps
        attention_mask = causal_mask(T, T_k, query.device)
    else:
        attention_mask = attention_mask[..., :T_k]  # static caches may hand a longer mask

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
    log_z2 = s.logsumexp(-1)  # (B, H, T)

    # virtual keys/values of this layer (computed once per forward call for all layers)
    K_all, V_all = method.virtual_kv()  # (L, H, n, d) each, fp32
    K, V = K_all[layer].to(q.device), V_all[layer].to(q.device)  # (H, n, d)
    s_d = torch.einsum("bhtd,hnd->bhtn", q, K) * scaling  # (B, H, T, n)
    log_den = torch.logaddexp(s_d.logsumexp(-1), log_z2)  # (B, H, T)
    alpha = (log_z2 - log_den).exp()  # (B, H, T)
    w = (s_d - log_den.unsqueeze(-1)).exp()  # (B, H, T, n)

    out = alpha.transpose(1, 2).unsqueeze(-1) * sa_out.float()  # (B, T, H, d)
    out = out + torch.einsum("bhtn,hnd->bthd", w, V)  # (B, T, H, d)
    if method._capture is not None:
        method._capture[layer] = (alpha.detach(), w.detach())
    return out.to(query.dtype), None


# registered once, globally, under a name nothing else uses; inert until a config selects it
AttentionInterface.register(ATTN_NAME, hificl_attention_forward)
AttentionMaskInterface.register(ATTN_NAME, hificl_mask)
