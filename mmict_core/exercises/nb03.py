"""Exercises of notebook 03 (HiFICL).  Each checks against the library code the adapter runs:
the low-rank factors (:func:`..methods.hificl.low_rank_kv`), the one softmax over [virtual; real]
keys (:func:`..methods.hificl.attention.virtual_softmax_attention`, the fused path) and its split into
α and w (:func:`..methods.hificl.attention.softmax_split`, the capture path).  One head, no batch."""
from __future__ import annotations

import random

import torch

from .core import Exercise, exercise
from .solutions import nb03 as solutions


def _t(g: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


# ---------------------------------------------------------------- 03.low_rank_kv


def _low_rank_ref(K_A, K_B, V_A, V_B):
    from ..methods.hificl import low_rank_kv

    return low_rank_kv(K_A, K_B, V_A, V_B)


def _low_rank_cases(rng: random.Random):
    out = []
    for _ in range(5):
        g = torch.Generator().manual_seed(rng.randint(0, 2**31))
        n, r, d = rng.randint(1, 6), rng.randint(1, 4), rng.randint(2, 8)
        out.append(((_t(g, n, r), _t(g, r, d), _t(g, n, r), _t(g, r, d)), {}))
    return out


def _low_rank_copy_paste(K_A, K_B, V_A, V_B):  # V from the key factor: the classic copy-paste slip
    return K_A @ K_B, K_A @ V_B


def _low_rank_scaled(K_A, K_B, V_A, V_B):  # an extra 1/sqrt(r): HiFICL has no such scaling
    r = K_A.shape[-1]
    return K_A @ K_B / r ** 0.5, V_A @ V_B / r ** 0.5


exercise(Exercise(
    key="03.low_rank_kv", title="03 · the virtual keys and values from their low-rank factors",
    reference=_low_rank_ref, cases=_low_rank_cases, solution=solutions.low_rank_kv,
    hints=("K_learn = K_A @ K_B: (n, r) @ (r, d) -> (n, d); V_learn = V_A @ V_B the same way",
           "no scaling: the attention's own 1/sqrt(d_h) is applied to the scores, not to the keys"),
    wrong=(_low_rank_copy_paste, _low_rank_scaled)))


# ---------------------------------------------------------------- 03.virtual_attention


def _mix_ref(q, k, v, K_learn, V_learn, scaling):
    from ..methods.hificl.attention import implicit_mask, prefix_visible, virtual_softmax_attention

    T, n = q.shape[0], K_learn.shape[0]
    mask = prefix_visible(implicit_mask(T, T, q.device)[0, 0], n, q.dtype)  # (T, n + T), virtual columns visible
    e = lambda x: x[None, None]  # noqa: E731  (T, d) -> (1, 1, T, d)
    return virtual_softmax_attention(e(q), e(k), e(v), e(K_learn), e(V_learn), mask, scaling)[0, 0]  # (T, d)


def _mix_cases(rng: random.Random):
    out = []
    for _ in range(5):
        g = torch.Generator().manual_seed(rng.randint(0, 2**31))
        T, n, d = rng.randint(2, 7), rng.randint(1, 4), rng.randint(2, 8)
        out.append(((_t(g, T, d, scale=1.5), _t(g, T, d, scale=1.5), _t(g, T, d), _t(g, n, d, scale=1.5), _t(g, n, d),
                     d ** -0.5), {}))
    return out


def _mix_two_softmaxes(q, k, v, K_learn, V_learn, scaling):  # each part normalised on its own: mass 2, no competition
    T = q.shape[0]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    real = torch.softmax((q @ k.T * scaling).masked_fill(~causal, float("-inf")), -1)
    return real @ v + torch.softmax(q @ K_learn.T * scaling, -1) @ V_learn


def _mix_masked_slots(q, k, v, K_learn, V_learn, scaling):  # tril over the concatenation hides most virtual slots
    T, n = q.shape[0], K_learn.shape[0]
    s = torch.cat([q @ K_learn.T, q @ k.T], -1) * scaling  # (T, n + T)
    s = s.masked_fill(~torch.ones(T, n + T, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(s, -1) @ torch.cat([V_learn, v], 0)


def _mix_no_mask(q, k, v, K_learn, V_learn, scaling):  # forgot the causal mask: position t reads the future
    s = torch.cat([q @ K_learn.T, q @ k.T], -1) * scaling
    return torch.softmax(s, -1) @ torch.cat([V_learn, v], 0)


exercise(Exercise(
    key="03.virtual_attention", title="03 · one softmax over [virtual keys; real keys]",
    reference=_mix_ref, cases=_mix_cases, solution=solutions.virtual_attention,
    hints=("scores = scaling * q @ [K_learn; k]ᵀ, shape (T, n + T); ONE softmax over the last axis, then @ [V_learn; v]",
           "the causal mask covers the real keys only (key j visible to position t when j <= t); "
           "the n virtual columns are visible to every position",
           "masked scores are -inf before the softmax (torch.masked_fill), never 0"),
    wrong=(_mix_two_softmaxes, _mix_masked_slots, _mix_no_mask)))


# ---------------------------------------------------------------- 03.attention_split


def _split_ref(q, k, K_learn, scaling):
    from ..methods.hificl.attention import implicit_mask, masked_scores, softmax_split

    T = q.shape[0]
    real = masked_scores(q @ k.T * scaling, implicit_mask(T, T, q.device)[0, 0])  # (T, T)
    return softmax_split(real, q @ K_learn.T * scaling)  # (T,), (T, n)


def _split_cases(rng: random.Random):
    return [(args[:2] + args[3:4] + args[5:], kw) for args, kw in _mix_cases(rng)]


def _split_unmasked(q, k, K_learn, scaling):  # Z2 over every key, the future included
    s_real, s_virt = q @ k.T * scaling, q @ K_learn.T * scaling
    p = torch.softmax(torch.cat([s_virt, s_real], -1), -1)
    return p[:, K_learn.shape[0]:].sum(-1), p[:, :K_learn.shape[0]]


def _split_w_alone(q, k, K_learn, scaling):  # w normalised over the virtual slots alone: it sums to 1, not 1 - α
    T = q.shape[0]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    s_real = (q @ k.T * scaling).masked_fill(~causal, float("-inf"))
    s_virt = q @ K_learn.T * scaling
    alpha = torch.softmax(torch.cat([s_virt, s_real], -1), -1)[:, K_learn.shape[0]:].sum(-1)
    return alpha, torch.softmax(s_virt, -1)


exercise(Exercise(
    key="03.attention_split", title="03 · α (the real keys' share) and w (each virtual slot's share)",
    reference=_split_ref, cases=_split_cases, solution=solutions.attention_split,
    hints=("α = Z2 / (Z1 + Z2) with Z2 = Σ_j≤t exp(s·q·k_j) (causal) and Z1 = Σ_i exp(s·q·K_learn_i); "
           "w_i = exp(s·q·K_learn_i) / (Z1 + Z2), so α + Σ_i w_i = 1",
           "work in log space (torch.logsumexp, torch.logaddexp) to avoid overflow"),
    wrong=(_split_unmasked, _split_w_alone)))
