"""MimIC's attention function, registered with transformers' attention and mask registries.

While a MimIC adapter is attached, the LM's ``_attn_implementation`` is "mmict_mimic": every
decoder self-attention then calls :func:`mimic_attention` with its post-RoPE queries and keys.
The function runs the backbone's scaled-dot-product attention and adds the query-gated shift of
the layer the module belongs to (found through the shared override mechanism,
:func:`..attention.bound`, filled by the attached method).
The mask function always materialises the boolean causal + padding mask (never the ``is_causal``
shortcut), because the masked log Z2 needs it.
"""
from __future__ import annotations

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from ..attention import BOUND, STOCK, bound, register_attention  # noqa: F401  (STOCK: re-exported)

ATTN_NAME = "mmict_mimic"
ACTIVE = BOUND  # id(attention module) -> (method, layer index, replaced implementation); shared, filled on attach


def _scores(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scaling: float,
            masked: bool) -> torch.Tensor:
    """q.k scores over the un-repeated grouped keys, in fp32 (B, H, T, S); -inf where ``mask`` hides a key
    (causal bottom-right when no mask is handed over) if ``masked``.  A decode step (T == 1) multiplies in
    the cache's own dtype (no fp32 copy of the cache: at a 4k context the copies cost more than the step)."""
    B, H, T, D = query.shape
    H_kv, S = key.shape[1], key.shape[2]
    dt = key.dtype if T == 1 else torch.float32
    qg = query.to(dt).reshape(B, H_kv, (H // H_kv) * T, D)  # (B, H_kv, rep*T, D): the query heads of each key head
    scores = (qg @ key.to(dt).transpose(-1, -2)).float().view(B, H, T, S) * scaling  # (B, H, T, S)
    if masked:
        if mask is None:  # no mask handed over: causal, aligned bottom-right for cached decoding
            mask = torch.ones(T, S, dtype=torch.bool, device=scores.device).tril(diagonal=S - T)
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores


def _add_shift(query: torch.Tensor, sa_out: torch.Tensor, log_z2: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
               v: torch.Tensor, capture: dict | None, layer: int) -> torch.Tensor:
    """sa_out (B, T, H, D) + mu * v with mu = exp(f - logaddexp(f, log Z2)), f = w.q + b; log_z2 (B, H, T)."""
    f = torch.einsum("bhtd,hd->bht", query.float(), w) + b[None, :, None]  # (B, H, T)  approximates log Z1
    mu = torch.exp(f - torch.logaddexp(f, log_z2))  # (B, H, T)
    if capture is not None:
        capture[layer] = ((1 - mu).detach(), mu.detach().unsqueeze(-1))
    shift = mu.transpose(1, 2)[..., None] * v  # (B, T, H, 1) * (H, D) -> (B, T, H, D)
    return (sa_out.float() + shift).to(sa_out.dtype)


def mimic_shift(query: torch.Tensor, key: torch.Tensor, sa_out: torch.Tensor, mask: torch.Tensor | None,
                scaling: float, w: torch.Tensor, b: torch.Tensor, v: torch.Tensor, z2: str,
                capture: dict | None = None, layer: int = 0) -> torch.Tensor:
    """SA(q, K, V) + mu(q) * v per head, with mu = exp(f - logaddexp(f, log Z2)), f(q) = w.q + b.

    query (B, H, T, D) post-RoPE; key (B, H_kv, S, D), H a multiple of H_kv (grouped-query heads
    share a key head; the cache is never repeated); sa_out (B, T, H, D);
    mask (B, 1|H, T, S) bool (True = visible) or None; w, v (H, D); b (H,).  Returns (B, T, H, D).
    With ``capture`` (a dict), records ``capture[layer] = (1 - mu (B, H, T), mu (B, H, T, 1))``: the
    real keys' share and the one virtual slot's (the attention-capture protocol of :mod:`..base`).
    """
    log_z2 = torch.logsumexp(_scores(query, key, mask, scaling, z2 == "masked"), dim=-1)  # (B, H, T)
    return _add_shift(query, sa_out, log_z2, w, b, v, capture, layer)


def mimic_decode_step(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                      scaling: float, w: torch.Tensor, b: torch.Tensor, v: torch.Tensor,
                      capture: dict | None = None, layer: int = 0) -> torch.Tensor:
    """One decode step (T == 1) of SDPA + :func:`mimic_shift` (masked log Z2) from ONE pass of q.k over
    the cache: the masked scores give log Z2, and softmax = exp(scores - log Z2) mixes the values
    (SDPA would compute the same scores a second time).  query (B, H, 1, D); key/value (B, H_kv, S, D);
    mask as :func:`mimic_shift` -> (B, 1, H, D) in the query's dtype."""
    B, H, T, D = query.shape
    H_kv = key.shape[1]
    scores = _scores(query, key, mask, scaling, True)  # (B, H, 1, S) fp32
    log_z2 = torch.logsumexp(scores, dim=-1)  # (B, H, 1)
    p = torch.exp(scores - log_z2.unsqueeze(-1))  # (B, H, 1, S): the softmax
    sa = p.to(value.dtype).view(B, H_kv, H // H_kv, -1) @ value  # (B, H_kv, rep, D), the cache in its own dtype
    sa_out = sa.view(B, H, T, D).transpose(1, 2).to(query.dtype)  # (B, 1, H, D)
    return _add_shift(query, sa_out, log_z2, w, b, v, capture, layer)


def mimic_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, **kwargs):
    """The registered attention function: SDPA, plus MimIC's shift where an adapter is active.  A decode
    step with the masked log Z2 (the default) takes :func:`mimic_decode_step`'s single pass over the cache."""
    entry = bound(module)
    if entry is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    method, layer, _ = entry
    mask = attention_mask
    if mask is not None and mask.dtype != torch.bool:  # additive float mask (0 = visible)
        mask = mask == 0
    scaling = kwargs.get("scaling") or query.shape[-1] ** -0.5
    args = (method.gate_w[layer], method.gate_b[layer], method.shift[layer])
    if query.shape[2] == 1 and method.config.z2 == "masked" and not (module.training and kwargs.get("dropout")):
        return mimic_decode_step(query, key, value, mask, scaling, *args, method._capture, layer), None
    sa_out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)  # (B, T, H, D)
    return mimic_shift(query, key, sa_out, mask, scaling, *args, method.config.z2, method._capture, layer), None


def materialised_sdpa_mask(*args, **kwargs):
    """``sdpa_mask`` without the causal skip: always a (B, 1, T, S) bool mask."""
    kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(*args, **kwargs)


def register() -> None:
    register_attention(ATTN_NAME, mimic_attention, materialised_sdpa_mask)


register()
