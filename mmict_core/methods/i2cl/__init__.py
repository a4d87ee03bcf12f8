"""I2CL — Implicit In-context Learning (Li et al., ICLR 2025).

Demonstrations are condensed into a context vector per layer and module, then injected into the
zero-shot query's residual stream with a few calibrated strengths:

    c^m_l   = mean over demos i of  o^m_l(demo_i alone)[last]       m ∈ {attn, mlp}: the module's output
    o^m_l(x)' = α^m_l · o^m_l(x) + β^m_l · c^m_l                      at every position of the query

α, β (2 scalars per module per layer: 4·L parameters) are learned on a few examples with the plain
cross-entropy; during training the context vector is perturbed by Gaussian noise (the paper's
noise augmentation).  Doc: docs/methods/i2cl.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from ...data import Episode
from ..base import Handle, Method, MethodConfig, check_range
from ..distill import capture_outputs
from ..registry import register_method
from ..vectors import module_output, with_output

MODULES = ("attn", "mlp")


@dataclass
class I2CLConfig(MethodConfig):
    shots: int = field(default=4, metadata={"help": "demonstrations condensed into the context vectors at inference"})
    train_shots: int = field(default=4, metadata={"help": "demonstrations per training episode"})
    alpha_init: float = field(default=1.0, metadata={"help": "initial weight α of the query's own module output"})
    beta_init: float = field(default=0.1, metadata={"help": "initial weight β of the context vector"})
    noise: float = field(default=0.01, metadata={"help": "std of the training-time noise on c, relative to c's std (0 = off)"})

    def validate(self) -> None:
        check_range(self, "alpha_init", -10.0, 10.0)
        check_range(self, "beta_init", -10.0, 10.0)
        check_range(self, "noise", 0.0, 10.0)


@register_method
class I2CL(Method):
    name = "i2cl"
    config_class = I2CLConfig
    tiny_config = {"shots": 2, "train_shots": 2}
    uses_demos = True
    summary = "I2CL (Li et al. 2025): per-layer attention/MLP context vectors from the demos, mixed into the zero-shot query with learned strengths"

    def __init__(self, backbone, config: I2CLConfig | None = None):
        super().__init__(backbone, config)
        L, c = backbone.num_layers, self.config
        init = torch.tensor([c.alpha_init, c.beta_init]).repeat(L, len(MODULES), 1)  # (L, 2 modules, [α, β])
        self.strengths = nn.Parameter(init.to(backbone.device))
        self._ctx: torch.Tensor | None = None  # (B, L, 2, d) context vectors of the current batch

    def _targets(self, l: int) -> tuple[nn.Module, nn.Module]:
        return self.backbone.attention(l), self.backbone.mlp(l)

    def _attach(self) -> list[Handle]:
        handles = [Handle(self._clear)]
        for l in range(self.backbone.num_layers):
            for m, mod in enumerate(self._targets(l)):
                def hook(module, args, out, l=l, m=m):
                    if self._ctx is None:
                        return None
                    h = module_output(out)  # (B, T, d)
                    a, b = self.strengths[l, m]
                    c = self._ctx[:, l, m].to(h.device, h.dtype)  # (B, d)
                    if self.training and self.config.noise:
                        c = c + torch.randn_like(c) * self.config.noise * c.std(-1, keepdim=True)
                    return with_output(out, a.to(h.dtype) * h + b.to(h.dtype) * c[:, None])
                handles.append(Handle(mod.register_forward_hook(hook).remove))
        return handles

    def _clear(self) -> None:
        self._ctx = None

    @torch.no_grad()
    def context_vectors(self, episodes: Sequence[Episode]) -> torch.Tensor:
        """c per episode: each demo alone (with its answer), the attention and MLP outputs of every
        layer at its last real token, averaged over the episode's demos, on the bare backbone.  (B, L, 2, d)"""
        if any(ep.k == 0 for ep in episodes):
            raise ValueError("I2CL condenses demonstrations into context vectors: pick at least 1 demonstration")
        bb, L = self.backbone, self.backbone.num_layers
        self._ctx = None  # extraction is never injected
        items = [Episode(demos=[], query=d) for ep in episodes for d in ep.demos]
        batch = bb.assemble_episodes(items, with_answer=True)  # right-padded
        last = batch.attention_mask.sum(1) - 1  # (N,)
        rows = torch.arange(len(items))
        mods = [mod for l in range(L) for mod in self._targets(l)]
        with capture_outputs(mods) as outs:
            bb.forward(batch)
        per = torch.stack([o[rows, last.to(o.device)].float() for o in outs], 1).view(len(items), L, len(MODULES), -1)
        return torch.stack([part.mean(0) for part in per.split([ep.k for ep in episodes])])  # (B, L, 2, d)

    def batch(self, episodes: Sequence[Episode], *, with_answer: bool, padding_side: str = "right",
              loss_on: str = "query"):
        """The queries at zero shots; each episode's context vectors are set for injection."""
        ctx = self.context_vectors(episodes)
        zero = [Episode(demos=[], query=e.query, task=e.task, info=e.info) for e in episodes]
        b = self.backbone.assemble_episodes(zero, with_answer=with_answer, loss_on=loss_on, padding_side=padding_side)
        self._ctx = ctx
        return b

    def expected_num_parameters(self) -> int:
        return self.backbone.num_layers * len(MODULES) * 2


__all__ = ["I2CL", "I2CLConfig"]
