"""Multimodal task vectors (Huang et al., "Multimodal Task Vectors Enable Many-Shot Multimodal
In-Context Learning", NeurIPS 2024).

Many-shot ICL does not fit the context; MTV keeps its effect as mean attention-head activations:

    z̄_{lj}  = mean over several many-shot ICL prompts p of a_{lj}(p)[last]     (head j of layer l, d_h)
    λ       = the heads chosen to carry the task (the paper: REINFORCE on the zero-shot loss)
    f(x):   run x at zero shots with a_{lj}(x)[last] := z̄_{lj} for every (l, j) ∈ λ

Training-free here: z̄ comes from each episode's own demonstrations (leave-one-out dummy-query
prompts, or with ``per_context`` the demos cut into several prompts: many shots beyond one
context), and λ is the ``heads`` heads whose replacement most raises P(y) on zero-shot dummy
queries (a one-step, deterministic stand-in for the paper's REINFORCE).  Doc: docs/methods/mtv.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from ...data import Episode
from ..base import Handle, Method, MethodConfig, check_range
from ..registry import register_method
from ..vectors import HeadPatch, dummy_query_contexts, head_effects, head_slots, prompt_end


@dataclass
class MTVConfig(MethodConfig):
    shots: int = field(default=8, metadata={"help": "demonstrations read per query (many-shot: k - 1 in each context)"})
    heads: int = field(default=4, metadata={"help": "heads whose last-token activation is replaced by its mean"})
    contexts: int = field(default=3, metadata={"help": "many-shot prompts averaged into the means"})
    per_context: int = field(default=0, metadata={
        "help": "demos per prompt (n - 1 in context + 1 dummy query), the demos cut into consecutive prompts: "
                "many shots beyond one context (e.g. 32 demos, per_context 8, contexts 4); "
                "0: leave-one-out prompts of all k - 1 other demos"})

    def validate(self) -> None:
        check_range(self, "heads", 1, 100_000)
        check_range(self, "contexts", 1, 256)
        if self.per_context == 1 or self.per_context < 0:
            raise ValueError(f"MTVConfig.per_context must be 0 (leave-one-out) or at least 2 "
                             f"(1 in context + 1 dummy query), got {self.per_context}")


@register_method
class MTV(Method):
    name = "mtv"
    config_class = MTVConfig
    tiny_config = {"shots": 3, "contexts": 2, "heads": 2}
    needs_training = False
    uses_demos = True
    summary = "multimodal task vectors (Huang et al. 2024): mean many-shot head activations replace the chosen heads at zero shots"

    def __init__(self, backbone, config: MTVConfig | None = None):
        super().__init__(backbone, config)
        if self.config.heads > backbone.num_layers * backbone.num_heads:
            raise ValueError(f"MTVConfig.heads must be at most the backbone's {backbone.num_layers * backbone.num_heads} heads, "
                             f"got {self.config.heads}")
        self._patch = HeadPatch(backbone)
        self.last: dict | None = None

    def _attach(self) -> list[Handle]:
        return self._patch.install()

    @torch.no_grad()
    def extract(self, episodes: Sequence[Episode]) -> dict:
        """Per episode: mean head activations z̄ (B, L, H, d_h), head scores (B, L, H) and the chosen
        heads (B lists of (l, j)), on the bare backbone."""
        bb, H = self.backbone, self.backbone.num_heads
        self._patch.clear()  # extraction is never patched
        ctxs = [dummy_query_contexts(ep, self.config.contexts, self.config.per_context) for ep in episodes]
        sizes = [len(cs) for cs in ctxs]
        flat = [c for cs in ctxs for c in cs]
        owner = torch.tensor([b for b, n in enumerate(sizes) for _ in range(n)])  # (N,)

        cb = bb.assemble_episodes(flat, with_answer=True)  # many-shot prompts
        rec = {"pos": prompt_end(cb)}
        with head_slots(bb, record=rec):
            bb.forward(cb)
        z = torch.stack([rec[l] for l in range(bb.num_layers)], 1)  # (N, L, H, d)
        z_mean = torch.stack([part.mean(0) for part in z.split(sizes)])  # (B, L, H, d)

        zero = bb.assemble_episodes([Episode(demos=[], query=c.query) for c in flat], with_answer=True)  # dummy queries, 0-shot
        score = torch.stack([part.mean(0) for part in head_effects(bb, zero, z_mean[owner]).split(sizes)])  # (B, L, H)
        top = score.view(len(episodes), -1).topk(self.config.heads, dim=-1).indices  # (B, heads)
        chosen = [[(int(i) // H, int(i) % H) for i in row] for row in top]
        self.last = {"z_mean": z_mean, "score": score, "heads": chosen}
        return self.last

    def batch(self, episodes: Sequence[Episode], *, with_answer: bool, padding_side: str = "right",
              loss_on: str = "query"):
        """The queries at zero shots; each episode's chosen heads are set to their means at its prompt end."""
        ex = self.extract(episodes)
        zero = [Episode(demos=[], query=e.query, task=e.task, info=e.info) for e in episodes]
        b = self.backbone.assemble_episodes(zero, with_answer=with_answer, loss_on=loss_on, padding_side=padding_side)
        end = prompt_end(b)
        row = torch.tensor([r for r, hs in enumerate(ex["heads"]) for _ in hs])
        lay = torch.tensor([l for hs in ex["heads"] for l, _ in hs])
        head = torch.tensor([j for hs in ex["heads"] for _, j in hs])
        self._patch.set(b.inputs_embeds.shape[1], row, end[row], lay, head, ex["z_mean"][row, lay, head])
        return b

    def expected_num_parameters(self) -> int:
        return 0


__all__ = ["MTV", "MTVConfig"]
