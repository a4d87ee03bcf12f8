"""M2IV-style losses and the many-shot teacher's demo sets.

- :func:`synergy_loss`: a Barlow-Twins cross-correlation between the MHA-branch and MLP-branch
  outputs of one layer (third-party reading, spec §5(c)).
- :func:`alignment_loss`: layer-wise cosine or MSE alignment of student to teacher outputs.
- :func:`split_demo_sets` / :func:`many_shot_episode`: a many-shot episode cut into ``m`` disjoint
  demo sets that each precede the *same* query (each set fits in one context).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ...data import Episode, make_episode


def synergy_loss(a: torch.Tensor, m: torch.Tensor, gamma: float, norm: str = "token") -> torch.Tensor:
    """Barlow-Twins loss between two views of ``n`` positions.  a, m: (n, d) -> scalar.

    norm 'token': each position L2-normalised over the d features (the HiFICL authors' code);
    norm 'feature': each feature L2-normalised over the n positions (C_ij is then a cosine in [-1, 1]).
    C = z_aᵀ z_m (d, d);  loss = mean_i (C_ii - 1)² + gamma · mean_{i≠j} C_ij².
    ||C||_F² is computed from the (n, n) Gram matrices when n < d, so C is never built then.
    """
    dim = -1 if norm == "token" else 0
    za = F.normalize(a.float(), p=2, dim=dim)  # (n, d)
    zm = F.normalize(m.float(), p=2, dim=dim)  # (n, d)
    n, d = za.shape
    diag = (za * zm).sum(0)  # (d,)  C_ii
    if n < d:
        fro2 = ((za @ za.T) * (zm @ zm.T)).sum()  # ||za^T zm||_F^2 = <za za^T, zm zm^T>
    else:
        fro2 = (za.T @ zm).pow(2).sum()
    off = (fro2 - diag.pow(2).sum()).clamp(min=0) / max(d * (d - 1), 1)
    return (diag - 1).pow(2).mean() + gamma * off


def alignment_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """Layer-wise alignment, averaged over layers and positions.  (L, n, d), (L, n, d) -> scalar."""
    s, t = student.float(), teacher.float()
    if kind == "cosine":
        return (1 - F.cosine_similarity(s, t, dim=-1)).mean()
    return F.mse_loss(s, t)


def split_demo_sets(episode: Episode, m: int) -> list[Episode]:
    """The episode's k demos cut, in order, into ``m`` disjoint sets of k/m, each followed by its query."""
    k = episode.k
    if m < 1 or k % m:
        raise ValueError(f"cannot split {k} demonstrations into {m} equal teacher sets; "
                         f"train_shots must be a multiple of teacher_sets")
    s = k // m
    return [Episode(demos=list(episode.demos[j * s:(j + 1) * s]), query=episode.query, task=episode.task,
                    info=dict(episode.info, teacher_set=j)) for j in range(m)]


def many_shot_episode(task, shots_per_set: int, sets: int, *, seed: int = 0, index: int = 0,
                      split: str = "train") -> Episode:
    """A training episode with ``sets * shots_per_set`` demos drawn from one pool (so every demo
    shares the episode's hidden variables with the query); :func:`split_demo_sets` cuts it."""
    k = shots_per_set * sets
    return make_episode(task, k, seed=seed, index=index, split=split, pool_size=max(k, 1))


def teacher_sets(episodes: Sequence[Episode], m: int) -> list[list[Episode]]:
    """``m`` lists of episodes: list j holds demo set j of every episode (one teacher batch each)."""
    per_ep = [split_demo_sets(e, m) for e in episodes]
    return [[sets[j] for sets in per_ep] for j in range(m)]
