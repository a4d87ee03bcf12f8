"""Function vectors (Todd et al., "Function Vectors in Large Language Models", ICLR 2024).

A few attention heads carry the task from the demonstrations to the last token.  They are found
by causal mediation, and their mean outputs, summed, form the function vector (FV):

    ā_{lj}   = mean over clean ICL prompts p of a_{lj}(p)[last]     (head j of layer l, d_h)
    CIE_{lj} = P(y | p̃, a_{lj} := ā_{lj}) − P(y | p̃)             p̃: the prompt with shuffled demo answers
    AIE_{lj} = mean over corrupted prompts of CIE_{lj}
    FV       = Σ_{(l,j) ∈ top-|A| by AIE} W_O^{l}[:, j] ā_{lj}       (each head's residual-stream share)
    f(x; FV): run x at zero shots, add FV to the output of decoder layer ℓ at the last position

Training-free: everything is extracted from each episode's own demonstrations (leave-one-out
dummy-query prompts, :func:`..vectors.dummy_query_contexts`).  Doc: docs/methods/function-vector.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from ...data import Episode, Example
from ..base import Handle, Method, MethodConfig, check_range
from ..registry import register_method
from ..vectors import PrefillPatch, add_at, dummy_query_contexts, head_contribution, head_effects, head_slots, prompt_end

MAX_ROWS = 256  # rows per patched forward while measuring the indirect effects


@dataclass
class FunctionVectorConfig(MethodConfig):
    shots: int = field(default=5, metadata={"help": "demonstrations read per query (k - 1 in context + 1 dummy query; at least 3)"})
    layer: int = field(default=-1, metadata={"help": "decoder layer whose output the FV is added to (0-based); "
                                                     "-1 = num_layers // 3 (the paper: an early-middle layer)"})
    heads: int = field(default=3, metadata={"help": "top heads by average indirect effect summed into the FV (the paper: 10 of ~1000)"})
    contexts: int = field(default=3, metadata={"help": "leave-one-out prompts for the mean head outputs and the indirect effects"})

    def validate(self) -> None:
        check_range(self, "layer", -1, 1024)
        check_range(self, "heads", 1, 100_000)
        check_range(self, "contexts", 1, 256)


def shuffled_answers(ep: Episode) -> Episode:
    """``ep`` with its demos' answers rotated by one (demo i gets demo i+1's): the corrupted prompt."""
    k = ep.k
    demos = [Example(images=list(d.images), prompt=d.prompt, answers=list(ep.demos[(i + 1) % k].answers), task=d.task,
                     meta=dict(d.meta)) for i, d in enumerate(ep.demos)]
    return Episode(demos=demos, query=ep.query, task=ep.task, info=ep.info)


def top_heads_vector(aie: torch.Tensor, contributions: torch.Tensor, heads: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """The function vector from the heads' average indirect effects: the ``heads`` heads with the
    largest AIE (over all layers), their residual-stream contributions summed.
    aie (L, H); contributions (L, H, d): W_O[:, j] z̄_lj -> (fv (d,), the chosen (layer, head) pairs, best first)"""
    L, H = aie.shape
    top = aie.reshape(-1).topk(heads).indices  # (heads,) flat indices, largest effect first
    chosen = [(int(i) // H, int(i) % H) for i in top]
    fv = torch.zeros(contributions.shape[-1], dtype=contributions.dtype)
    for l, j in chosen:
        fv += contributions[l, j]
    return fv, chosen


@register_method
class FunctionVector(Method):
    name = "function-vector"
    config_class = FunctionVectorConfig
    tiny_config = {"shots": 3, "contexts": 1, "heads": 2}
    needs_training = False
    uses_demos = True
    summary = "function vector (Todd et al. 2024): top heads by causal indirect effect, their mean outputs summed and added at one layer"

    def __init__(self, backbone, config: FunctionVectorConfig | None = None):
        super().__init__(backbone, config)
        L, H = backbone.num_layers, backbone.num_heads
        self.layer = L // 3 if self.config.layer == -1 else self.config.layer
        if not 0 <= self.layer < L:
            raise ValueError(f"FunctionVectorConfig.layer must be in [0, {L - 1}] (or -1) for this backbone, got {self.config.layer}")
        if self.config.heads > L * H:
            raise ValueError(f"FunctionVectorConfig.heads must be at most the backbone's {L * H} heads, got {self.config.heads}")
        self._patch = PrefillPatch(backbone.decoder_layers()[self.layer], add_at)
        self.last: dict | None = None  # what the last extraction found (for inspection and tests)

    def _attach(self) -> list[Handle]:
        return self._patch.install()

    def head_contribution(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """Each head's share of the residual stream, W_O[:, j] z_j.  z (..., H, d_h) -> (..., H, d)"""
        return head_contribution(self.backbone, layer, z)

    # -- extraction --------------------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, episodes: Sequence[Episode]) -> dict:
        """Per episode: mean head outputs z̄ (B, L, H, d_h), average indirect effects (B, L, H), the
        chosen heads (B lists of (l, j)) and the function vector (B, d), all on the bare backbone."""
        bb, L, H = self.backbone, self.backbone.num_layers, self.backbone.num_heads
        self._patch.clear()  # extraction is never patched
        ctxs = [dummy_query_contexts(ep, self.config.contexts) for ep in episodes]
        if any(c.k < 2 for cs in ctxs for c in cs):
            raise ValueError("function vectors compare clean and shuffled-answer prompts: pick at least 3 demonstrations")
        sizes = [len(cs) for cs in ctxs]
        clean = [c for cs in ctxs for c in cs]
        owner = torch.tensor([b for b, n in enumerate(sizes) for _ in range(n)])  # (N,) episode of each prompt

        # 1. mean head outputs over the clean prompts, at the prompt end
        cb = bb.assemble_episodes(clean, with_answer=True)
        rec = {"pos": prompt_end(cb)}
        with head_slots(bb, record=rec):
            bb.forward(cb)
        z = torch.stack([rec[l] for l in range(L)], 1)  # (N, L, H, d)
        z_mean = torch.stack([part.mean(0) for part in z.split(sizes)])  # (B, L, H, d)

        # 2. indirect effect of each head on the corrupted prompts
        bad = bb.assemble_episodes([shuffled_answers(c) for c in clean], with_answer=True)
        effect = head_effects(bb, bad, z_mean[owner], MAX_ROWS)  # (N, L, H)
        aie = torch.stack([part.mean(0) for part in effect.split(sizes)])  # (B, L, H)

        # 3. the function vector: the top heads' mean outputs in the residual stream, summed
        fv = torch.zeros(len(episodes), bb.hidden_size)
        chosen = []
        for b in range(len(episodes)):
            contrib = torch.stack([self.head_contribution(l, z_mean[b, l]) for l in range(L)]).cpu()  # (L, H, d)
            fv[b], heads_b = top_heads_vector(aie[b].cpu(), contrib, self.config.heads)
            chosen.append(heads_b)
        self.last = {"z_mean": z_mean, "aie": aie, "heads": chosen, "fv": fv}
        return self.last

    def batch(self, episodes: Sequence[Episode], *, with_answer: bool, padding_side: str = "right",
              loss_on: str = "query"):
        """The queries at zero shots; each episode's FV is set to be added at its prompt end."""
        fv = self.extract(episodes)["fv"]  # (B, d)
        zero = [Episode(demos=[], query=e.query, task=e.task, info=e.info) for e in episodes]
        b = self.backbone.assemble_episodes(zero, with_answer=with_answer, loss_on=loss_on, padding_side=padding_side)
        self._patch.set(b.inputs_embeds.shape[1], prompt_end(b), fv)
        return b

    def expected_num_parameters(self) -> int:
        return 0


__all__ = ["FunctionVector", "FunctionVectorConfig", "shuffled_answers", "top_heads_vector"]
