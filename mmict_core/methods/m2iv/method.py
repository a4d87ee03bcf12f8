"""M2IV-style multimodal in-context vectors — an UNVERIFIED reading (the paper body, arXiv
2504.04633, could not be read and no official code exists; see docs/methods/m2iv.md).

Every decoder layer l gets a learnable vector in the MHA path and one in the MLP path, added to
the module outputs (the residual-stream contributions) with learnable strengths:

    a_l' = a_l + alpha_l * v_l^a        (self-attention output; or per head before o_proj)
    m_l' = m_l + beta_l  * v_l^m        (MLP output)

Trained by distillation from a (many-shot) ICL teacher on the bare backbone:
ce_weight * CE + align_weight * layer-wise alignment of MLP outputs + synergy_weight * a
Barlow-Twins loss between the MHA and MLP branch outputs (+ an optional logit KL).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from functools import partial
from typing import Iterator, NamedTuple, Sequence

import torch
from torch import nn

from ...backbones.base import AssembledBatch, VLMBackbone
from ...data import Episode
from ..base import Handle, Method, MethodConfig, check_range
from ..distill import answer_logit_positions, capture_outputs, gather_rows, kl_teacher_student, query_positions
from ..registry import register_method
from .losses import alignment_loss, synergy_loss, teacher_sets


@dataclass
class M2IVConfig(MethodConfig):
    shots: int = field(default=0, metadata={"help": "demonstrations at inference (M2IV reads the query alone: keep 0)"})
    train_shots: int = field(default=8, metadata={"help": "demonstrations per training episode; the teacher reads them in teacher_sets contexts"})
    teacher_sets: int = field(default=1, metadata={"help": "many-shot teacher: split the train_shots demos into this many disjoint contexts (train_shots/teacher_sets each, same query) and average the teacher's outputs"})
    sites: str = field(default="both", metadata={"help": "where vectors are injected: 'both' (MHA and MLP outputs), 'mha' or 'mlp'"})
    granularity: str = field(default="layer", metadata={"help": "MHA vectors: 'layer' (one d-vector per layer, on the attention output) or 'head' (one d_head-vector and strength per head, on the o_proj input)"})
    positions: str = field(default="all", metadata={"help": "'all' tokens, or 'last': the last prompt token and every answer/generated token"})
    learn_strength: bool = field(default=True, metadata={"help": "train the strengths alpha_l / beta_l (False: fixed at strength_init)"})
    strength_init: float = field(default=0.1, metadata={"help": "initial strengths alpha_l and beta_l (LIVE uses 0.1)"})
    vector_init: str = field(default="normal", metadata={"help": "'normal' (N(0, vector_init_std)) or 'zeros' (identity at init; needs strength_init != 0 to train)"})
    vector_init_std: float = field(default=0.01, metadata={"help": "std of the normal vector initialisation"})
    ce_weight: float = field(default=0.5, metadata={"help": "weight of the answer cross-entropy of the student"})
    align_weight: float = field(default=1.0, metadata={"help": "weight of the layer-wise alignment of MLP outputs (query positions) to the teacher"})
    align_loss: str = field(default="cosine", metadata={"help": "alignment distance: 'cosine' (1 - cos) or 'mse'"})
    kl_weight: float = field(default=0.0, metadata={"help": "weight of KL(teacher || student) on the answer logits (0 = off)"})
    synergy_weight: float = field(default=0.8, metadata={"help": "weight of the Barlow-Twins synergy loss between MHA and MLP branch outputs (needs sites='both')"})
    synergy_gamma: float = field(default=0.1, metadata={"help": "weight of the mean squared off-diagonal cross-correlation in the synergy loss"})
    synergy_norm: str = field(default="token", metadata={"help": "L2 normalisation before the cross-correlation: 'token' (per position, third-party code) or 'feature' (per feature over positions)"})
    mha_lr_scale: float = field(default=1.0, metadata={"help": "MHA-branch learning rate relative to the trainer's lr (5e-3 x 1.0 = 5e-3)"})
    mlp_lr_scale: float = field(default=2.0, metadata={"help": "MLP-branch learning rate relative to the trainer's lr (5e-3 x 2.0 = 1e-2)"})

    def validate(self) -> None:
        check_range(self, "teacher_sets", 1, 64)
        if self.train_shots % self.teacher_sets:
            raise ValueError(f"M2IVConfig.train_shots ({self.train_shots}) must be a multiple of "
                             f"M2IVConfig.teacher_sets ({self.teacher_sets}): each teacher context gets train_shots/teacher_sets demos")
        check_range(self, "sites", choices=("both", "mha", "mlp"))
        check_range(self, "granularity", choices=("layer", "head"))
        check_range(self, "positions", choices=("all", "last"))
        if not isinstance(self.learn_strength, bool):
            raise ValueError(f"M2IVConfig.learn_strength must be True or False, got {self.learn_strength!r}")
        check_range(self, "strength_init", -10.0, 10.0)
        check_range(self, "vector_init", choices=("normal", "zeros"))
        check_range(self, "vector_init_std", 0.0, 10.0)
        for name in ("ce_weight", "align_weight", "kl_weight", "synergy_weight"):
            check_range(self, name, 0.0, 100.0)
        check_range(self, "align_loss", choices=("cosine", "mse"))
        check_range(self, "synergy_gamma", 0.0, 100.0)
        check_range(self, "synergy_norm", choices=("token", "feature"))
        check_range(self, "mha_lr_scale", 0.0, 1000.0)
        check_range(self, "mlp_lr_scale", 0.0, 1000.0)
        if self.synergy_weight > 0 and self.sites != "both":
            raise ValueError(f"M2IVConfig.synergy_weight must be 0 when sites={self.sites!r}: "
                             f"the synergy loss needs both the MHA and the MLP branch (sites='both')")
        if self.ce_weight + self.align_weight + self.kl_weight + self.synergy_weight == 0:
            raise ValueError("M2IVConfig: at least one of ce_weight, align_weight, kl_weight, synergy_weight must be > 0")


class TeacherOutputs(NamedTuple):
    mlp: torch.Tensor  # (L, N, d) MLP outputs at the query positions, averaged over the teacher sets
    logits: torch.Tensor  # (N_ans, V) log of the averaged answer distributions


def generation_mask(batch: AssembledBatch) -> torch.Tensor:
    """Positions an adapter sees as 'last' during generation: the query's last prompt/image token
    and every answer token (each is the last token when it is generated).  (B, T) bool"""
    mask = torch.zeros_like(batch.attention_mask, dtype=torch.bool)
    for b in range(mask.shape[0]):
        q = max(it for _, it, _, _ in batch.spans[b])
        ans = batch.positions(b, "answer", q)
        end = int(batch.attention_mask[b].nonzero().flatten()[-1]) + 1
        mask[b, (ans[0] - 1 if ans else end - 1):end] = True
    return mask


def _out_proj(attn: nn.Module) -> nn.Linear:  # kept for old imports; the backbone's out_proj(layer) is the accessor
    for name in ("o_proj", "out_proj", "dense"):
        mod = getattr(attn, name, None)
        if isinstance(mod, nn.Module):
            return mod
    raise ValueError(f"granularity='head' needs the attention output projection, but {type(attn).__name__} "
                     f"has no o_proj/out_proj; use granularity='layer'")


@register_method
class M2IV(Method):
    name = "m2iv"
    config_class = M2IVConfig
    tiny_config = {"train_shots": 2}
    needs_teacher = True
    summary = ("M2IV-style (unverified): learnable vectors with learnable strengths added to every layer's "
               "MHA and MLP outputs, distilled from a many-shot ICL teacher")

    def __init__(self, backbone: VLMBackbone, config: M2IVConfig | None = None):
        super().__init__(backbone, config)
        cfg = self.config
        L, d = backbone.num_layers, backbone.hidden_size
        self.num_layers, self.hidden = L, d
        self.has_mha, self.has_mlp = cfg.sites in ("both", "mha"), cfg.sites in ("both", "mlp")
        gen = torch.Generator().manual_seed(cfg.seed)
        dev = backbone.device

        def vectors(*shape):
            v = torch.randn(*shape, generator=gen) * cfg.vector_init_std if cfg.vector_init == "normal" else torch.zeros(*shape)
            return nn.Parameter(v.to(dev))

        def strengths(name, *shape):
            s = torch.full(shape, float(cfg.strength_init), device=dev)
            if cfg.learn_strength:
                setattr(self, name, nn.Parameter(s))
            else:
                self.register_buffer(name, s)

        if self.has_mha:
            if cfg.granularity == "layer":
                self.mha_vectors = vectors(L, d)  # (L, d)
                strengths("mha_strength", L)  # (L,)
            else:
                self.n_heads, self.head_dim = self._head_shape()
                self.mha_vectors = vectors(L, self.n_heads, self.head_dim)  # (L, H, d_h)
                strengths("mha_strength", L, self.n_heads)  # (L, H)
        if self.has_mlp:
            self.mlp_vectors = vectors(L, d)  # (L, d)
            strengths("mlp_strength", L)  # (L,)
        self._rec: dict[str, list] | None = None  # branch outputs recorded during a student pass
        self._pos_mask: torch.Tensor | None = None  # (B, T) positions to shift when positions='last'

    def _head_shape(self) -> tuple[int, int]:
        attn = self.backbone.attention(0)
        H, dh = self.backbone.num_heads, self.backbone.head_dim
        o = _out_proj(attn)
        if getattr(o, "in_features", H * dh) != H * dh:
            raise ValueError(f"granularity='head': o_proj takes {o.in_features} features, not heads x head_dim = {H}x{dh}")
        return H, dh

    # -- injection ----------------------------------------------------------------------------
    def _attach(self) -> list[Handle]:
        handles = []
        for l in range(self.num_layers):
            attn, mlp = self.backbone.attention(l), self.backbone.mlp(l)
            if self.has_mha and self.config.granularity == "head":
                handles.append(Handle(_out_proj(attn).register_forward_pre_hook(partial(self._head_hook, l)).remove))
            handles.append(Handle(attn.register_forward_hook(partial(self._out_hook, "mha", l)).remove))
            handles.append(Handle(mlp.register_forward_hook(partial(self._out_hook, "mlp", l)).remove))
        return handles

    def _shift(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """x + delta at the configured positions.  x (B, T, ...), delta broadcastable to x[0, 0]."""
        delta = delta.to(x.dtype)
        if self.config.positions == "all":
            return x + delta
        B, T = x.shape[:2]
        if self._pos_mask is not None and tuple(self._pos_mask.shape) == (B, T):
            mask = self._pos_mask
        else:  # generation: the newest token is the last one
            mask = torch.zeros(B, T, dtype=torch.bool, device=x.device)
            mask[:, -1] = True
        mask = mask.to(x.device, x.dtype).reshape(B, T, *([1] * (x.ndim - 2)))
        return x + mask * delta

    def _out_hook(self, kind: str, l: int, module, args, out):
        x = out[0] if isinstance(out, tuple) else out  # (B, T, d)
        inject = (self.has_mha and self.config.granularity == "layer") if kind == "mha" else self.has_mlp
        if inject:
            x = self._shift(x, getattr(self, f"{kind}_strength")[l] * getattr(self, f"{kind}_vectors")[l])
        if self._rec is not None:
            self._rec[kind][l] = x
        return (x, *out[1:]) if isinstance(out, tuple) else x

    def _head_hook(self, l: int, module, args):
        x = args[0]  # (B, T, H * d_h), the concatenated head outputs
        B, T = x.shape[:2]
        delta = self.mha_strength[l][:, None] * self.mha_vectors[l]  # (H, d_h)
        x = self._shift(x.reshape(B, T, self.n_heads, self.head_dim), delta).reshape(B, T, -1)
        return (x, *args[1:])

    @contextlib.contextmanager
    def _student(self, batch: AssembledBatch) -> Iterator[dict[str, list]]:
        """Record both branches' outputs (and set 'last' positions) for one student forward."""
        self._rec = {"mha": [None] * self.num_layers, "mlp": [None] * self.num_layers}
        self._pos_mask = generation_mask(batch) if self.config.positions == "last" else None
        try:
            yield self._rec
        finally:
            self._rec, self._pos_mask = None, None

    # -- training -----------------------------------------------------------------------------
    @torch.no_grad()
    def teacher_outputs(self, episodes: Sequence[Episode]) -> TeacherOutputs:
        """The bare backbone reading each demo set + query; MLP outputs at the query positions and
        answer distributions, averaged over the ``teacher_sets`` sets."""
        m, L = self.config.teacher_sets, self.num_layers
        mods = [self.backbone.mlp(l) for l in range(L)]
        mlp_sum = prob_sum = None
        for eps in teacher_sets(episodes, m):
            batch = self.backbone.assemble_episodes(eps, with_answer=True, loss_on="query")
            with capture_outputs(mods) as store:
                logits = self.backbone.forward(batch)  # (B, T, V)
            pos = [query_positions(batch, b) for b in range(len(eps))]
            mlp = torch.stack([gather_rows(store[l], pos) for l in range(L)]).float()  # (L, N, d)
            probs = gather_rows(logits, [answer_logit_positions(batch, b) for b in range(len(eps))]).float().softmax(-1)
            mlp_sum = mlp if mlp_sum is None else mlp_sum + mlp
            prob_sum = probs if prob_sum is None else prob_sum + probs
        return TeacherOutputs(mlp_sum / m, (prob_sum / m).log())

    def loss(self, episodes: Sequence[Episode], loss_on: str = "query") -> tuple[torch.Tensor, dict[str, float]]:
        if self._depth:
            raise RuntimeError("M2IV.loss runs the teacher on the bare backbone: call it outside `with method.attached()`")
        cfg = self.config
        teacher = self.teacher_outputs(episodes) if (cfg.align_weight > 0 or cfg.kl_weight > 0) else None
        batch = self.batch(episodes, with_answer=True, loss_on=loss_on)
        B = len(episodes)
        with self.attached(), self._student(batch) as rec:
            logits = self.backbone.forward(batch)  # (B, T, V)
        ce = self.backbone.loss(batch, logits)
        total, parts = cfg.ce_weight * ce, {"ce": float(ce.detach())}
        pos = [query_positions(batch, b) for b in range(B)]
        if cfg.align_weight > 0:
            student = torch.stack([gather_rows(rec["mlp"][l], pos) for l in range(self.num_layers)])  # (L, N, d)
            align = alignment_loss(student, teacher.mlp, cfg.align_loss)
            total, parts["align"] = total + cfg.align_weight * align, float(align.detach())
        if cfg.kl_weight > 0:
            s_logits = gather_rows(logits, [answer_logit_positions(batch, b) for b in range(B)])
            kl = kl_teacher_student(teacher.logits, s_logits)
            total, parts["kl"] = total + cfg.kl_weight * kl, float(kl.detach())
        if cfg.synergy_weight > 0:
            syn = torch.stack([synergy_loss(rec["mha"][l][b, pos[b]], rec["mlp"][l][b, pos[b]], cfg.synergy_gamma, cfg.synergy_norm)
                               for l in range(self.num_layers) for b in range(B)]).mean()
            total, parts["synergy"] = total + cfg.synergy_weight * syn, float(syn.detach())
        parts["loss"] = float(total.detach())
        return total, parts

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: each branch at its own lr (``lr_scale`` x the trainer's lr); decay on vectors only."""
        groups = []
        for branch, scale in (("mha", self.config.mha_lr_scale), ("mlp", self.config.mlp_lr_scale)):
            if not getattr(self, f"has_{branch}"):
                continue
            groups.append({"params": [getattr(self, f"{branch}_vectors")], "weight_decay": weight_decay, "lr_scale": scale})
            s = getattr(self, f"{branch}_strength")
            if isinstance(s, nn.Parameter):
                groups.append({"params": [s], "weight_decay": 0.0, "lr_scale": scale})
        return groups

    def expected_num_parameters(self) -> int:
        """2·L·d + 2·L with the defaults (layer granularity, both sites, learnable strengths)."""
        L, d, learn = self.num_layers, self.hidden, int(self.config.learn_strength)
        n = 0
        if self.has_mha:
            if self.config.granularity == "layer":
                n += L * d + learn * L
            else:
                n += L * self.n_heads * self.head_dim + learn * L * self.n_heads
        if self.has_mlp:
            n += L * d + learn * L
        return n
