"""Task vectors (Hendel, Geva & Globerson, "In-Context Learning Creates Task Vectors", 2023).

ICL compresses the demonstrations S into one vector θ(S): the residual stream at an intermediate
layer L, at the last position of a prompt "S, x'" that ends in a dummy query x'.  The query x is
then answered at zero shots with that state patched in:

    θ(S) = mean over contexts c of h_L(c)[last]        (h_L: output of decoder layer L)
    f(x; θ):  run x alone, replace h_L(x)[last] by θ(S), continue the forward from layer L + 1

Training-free: nothing is learned, the vector is extracted from each episode's own demonstrations
(leave-one-out contexts, see :func:`..vectors.dummy_query_contexts`).  Doc: docs/methods/task-vector.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from ...data import Episode
from ..base import Handle, Method, MethodConfig, check_range
from ..distill import capture_outputs
from ..registry import register_method
from ..vectors import PrefillPatch, dummy_query_contexts, prompt_end, replace_at


@dataclass
class TaskVectorConfig(MethodConfig):
    shots: int = field(default=5, metadata={"help": "demonstrations read per query: k - 1 in context + 1 dummy query"})
    layer: int = field(default=-1, metadata={"help": "decoder layer whose output is read and patched (0-based); "
                                                     "-1 = num_layers // 3, an early-middle layer (the paper picks it on a dev set; "
                                                     "layer 1 of the teaching VLM's 4 is best)"})
    contexts: int = field(default=1, metadata={"help": "dummy-query contexts averaged into θ (leave-one-out over the "
                                                       "last demos; 1 = the paper's single S, x')"})

    def validate(self) -> None:
        check_range(self, "layer", -1, 1024)
        check_range(self, "contexts", 1, 256)


@register_method
class TaskVector(Method):
    name = "task-vector"
    config_class = TaskVectorConfig
    tiny_config = {"shots": 3, "layer": 1}
    needs_training = False
    uses_demos = True
    summary = "task vector (Hendel et al. 2023): mean layer-L state at a dummy query's last token, patched into the zero-shot query"

    def __init__(self, backbone, config: TaskVectorConfig | None = None):
        super().__init__(backbone, config)
        L = backbone.num_layers
        self.layer = L // 3 if self.config.layer == -1 else self.config.layer
        if not 0 <= self.layer < L:
            raise ValueError(f"TaskVectorConfig.layer must be in [0, {L - 1}] (or -1) for this backbone, got {self.config.layer}")
        self._patch = PrefillPatch(backbone.decoder_layers()[self.layer], replace_at)

    def _attach(self) -> list[Handle]:
        return self._patch.install()

    @torch.no_grad()
    def extract(self, episodes: Sequence[Episode]) -> torch.Tensor:
        """θ per episode: the mean over its dummy-query contexts of layer L's output at the last
        prompt position, on the bare backbone.  (B, d) fp32"""
        ctxs = [dummy_query_contexts(ep, self.config.contexts) for ep in episodes]
        flat = [c for cs in ctxs for c in cs]
        batch = self.backbone.assemble_episodes(flat, with_answer=False, padding_side="left")
        self._patch.clear()  # extraction is never patched
        with capture_outputs([self.backbone.decoder_layers()[self.layer]]) as out:
            self.backbone.forward(batch)
        h = out[0][:, -1].float()  # (N, d): left padding puts every prompt's end at T - 1
        sizes = [len(cs) for cs in ctxs]
        return torch.stack([part.mean(0) for part in h.split(sizes)])  # (B, d)

    def batch(self, episodes: Sequence[Episode], *, with_answer: bool, padding_side: str = "right",
              loss_on: str = "query"):
        """The queries at zero shots; θ of each episode is set to be patched at its prompt end."""
        theta = self.extract(episodes)  # (B, d)
        zero = [Episode(demos=[], query=e.query, task=e.task, info=e.info) for e in episodes]
        b = self.backbone.assemble_episodes(zero, with_answer=with_answer, loss_on=loss_on, padding_side=padding_side)
        self._patch.set(b.inputs_embeds.shape[1], prompt_end(b), theta)
        return b

    def expected_num_parameters(self) -> int:
        return 0


__all__ = ["TaskVector", "TaskVectorConfig"]
