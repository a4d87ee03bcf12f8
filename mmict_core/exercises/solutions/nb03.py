"""Worked solutions of notebook 03's exercises (see mmict_core.exercises.solutions)."""
from __future__ import annotations


def low_rank_kv(K_A, K_B, V_A, V_B):
    # (n, r) @ (r, d) -> (n, d): n virtual keys (values) of rank r
    return K_A @ K_B, V_A @ V_B


def virtual_attention(q, k, v, K_learn, V_learn, scaling):
    import torch

    T, n = q.shape[0], K_learn.shape[0]
    scores = torch.cat([q @ K_learn.T, q @ k.T], dim=-1) * scaling  # (T, n + T): virtual columns first
    visible = torch.ones(T, n + T, dtype=torch.bool)
    visible[:, n:] = torch.ones(T, T, dtype=torch.bool).tril()  # causal on the real keys only
    p = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)  # (T, n + T), rows sum to 1
    return p @ torch.cat([V_learn, v], dim=0)  # (T, d)


def attention_split(q, k, K_learn, scaling):
    import torch

    T = q.shape[0]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    real = (q @ k.T * scaling).masked_fill(~causal, float("-inf"))  # (T, T)
    virt = q @ K_learn.T * scaling  # (T, n)
    log_z2 = torch.logsumexp(real, -1)  # (T,)
    log_z = torch.logaddexp(torch.logsumexp(virt, -1), log_z2)  # log(Z1 + Z2)
    return torch.exp(log_z2 - log_z), torch.exp(virt - log_z[:, None])  # α (T,), w (T, n)
