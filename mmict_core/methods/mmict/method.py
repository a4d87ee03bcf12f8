"""MMICT and its baselines VanillaFT / VanillaICT: fine-tune the M-Hub (Q-Former, query tokens,
projection) with the vision encoder and the LM frozen.

The Method owns deep copies of the three trained parts and swaps them into the backbone while
attached, so the backbone's own weights never change and a saved adapter holds only the copies.

Inputs (``Q`` query tokens, ``P`` the copied projection, ``E`` the LM's token embeddings):

- VanillaFT:  ``[BOS] E(prompt) P·H_q(img | prompt) E(answer EOS)``  (the backbone's plain 0-shot layout)
- VanillaICT: the plain interleaved k-shot layout, each demo ``E(prompt_i) P·H_q(img_i | prompt_i) E(answer_i EOS)``
- MMICT:      ``[BOS] (P·H_t(img_i | prompt_i answer_i) E(<eoc>))_i  E(prompt) P·H_q(img | prompt) E(answer EOS)``
  where ``H_t`` = the real text-token outputs of the Q-Former run and ``H_q`` its query-token outputs;
  ``E(<eoc>)`` is the LM's separator token, or a trainable embedding when its vocabulary has none.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from ...backbones.base import AssembledBatch, Segment
from ...data import Episode
from ..base import Handle, Method, MethodConfig, check_range, swap_attr
from ..registry import register_method
from .mhub import HUB_PARTS, check_hub_backbone, demo_text, qformer_tokens, run_mhub


CPU_REPACK_FLAG = "support_avx512bf16_for_cpu"  # bitsandbytes Linear4bit: may repack its weight for CPU inference


def cpu_repacked(model: nn.Module) -> bool:
    """True when some bitsandbytes 4-bit weight of ``model`` is in the CPU inference packing (no backward)."""
    return any(getattr(getattr(getattr(mod, "weight", None), "quant_state", None), "packing_format_for_cpu", False)
               for mod in model.modules())


# -- configs --------------------------------------------------------------------------------------
@dataclass
class HubTuneConfig(MethodConfig):
    """Shared by MMICT, VanillaFT and VanillaICT: the same trainable parts and optimiser."""

    lr_scale: float = field(default=0.1, metadata={
        "help": "multiplier on the trainer's lr for the Q-Former, query tokens and projection (full fine-tuning "
                "of the M-Hub wants a smaller step than a small adapter; the paper uses 1e-5 on BLIP-2)"})

    def validate(self) -> None:
        check_range(self, "lr_scale", 1e-6, 10.0)


@dataclass
class MMICTConfig(HubTuneConfig):
    shots: int = field(default=4, metadata={"help": "demonstrations (as M-Hub text features) before the query at inference"})
    train_shots: int = field(default=4, metadata={"help": "demonstrations per training episode"})


@dataclass
class VanillaFTConfig(HubTuneConfig):
    shots: int = field(default=0, metadata={"help": "ignored: VanillaFT reads the query alone"})
    train_shots: int = field(default=0, metadata={"help": "ignored: VanillaFT trains on the query alone"})


@dataclass
class VanillaICTConfig(HubTuneConfig):
    shots: int = field(default=4, metadata={"help": "demonstrations (image tokens + text) before the query at inference"})
    train_shots: int = field(default=4, metadata={"help": "demonstrations per training episode"})


def hub_parameter_count(config) -> int:
    """Parameters of Q-Former + query tokens + projection, from an InstructBlipConfig's sizes."""
    q = config.qformer_config
    h, i, enc, n = q.hidden_size, q.intermediate_size, q.encoder_hidden_size, q.num_hidden_layers
    d_lm = config.get_text_config().hidden_size
    ln = 2 * h  # LayerNorm weight + bias
    emb = q.vocab_size * h + q.max_position_embeddings * h + ln  # word + position + LayerNorm
    self_attn = 4 * (h * h + h) + ln  # q, k, v, output dense + LayerNorm
    cross_attn = 2 * (h * h + h) + 2 * (enc * h + h) + ln  # q, out from h; k, v from the vision width
    ffn = (h * i + i) + (i * h + h) + ln  # one FFN; each layer has a text and a query FFN
    n_cross = sum(1 for l in range(n) if l % q.cross_attention_frequency == 0)
    qformer = emb + n * (self_attn + 2 * ffn) + n_cross * cross_attn
    return qformer + config.num_query_tokens * h + (h * d_lm + d_lm)


# -- the shared base ------------------------------------------------------------------------------
class HubTuned(Method):
    """Owns trainable copies of ``model.qformer``, ``model.query_tokens``, ``model.language_projection``."""

    config_class = HubTuneConfig

    def __init__(self, backbone, config: HubTuneConfig | None = None):
        super().__init__(backbone, config)
        check_hub_backbone(backbone, type(self).__name__)
        m = backbone.model
        # copies initialised from the backbone's current weights: at step 0 the method == the base model
        self.qformer = copy.deepcopy(m.qformer)
        self.query_tokens = nn.Parameter(m.query_tokens.detach().clone())  # (1, Q, d_q)
        self.language_projection = copy.deepcopy(m.language_projection)
        for p in self.parameters():
            p.requires_grad_(True)
            p.grad = None

    @property
    def num_query_tokens(self) -> int:
        return int(self.query_tokens.shape[1])

    def _attach(self) -> list[Handle]:
        m = self.backbone.model
        # vision encoder and LM are frozen while the method runs (restored on detach); collected
        # before the swap, so the originals are covered and the copies are not
        frozen = [p for p in m.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        handles = [Handle(lambda: [p.requires_grad_(True) for p in frozen])]
        # bitsandbytes 4-bit on AVX512-BF16 CPUs repacks a weight for inference on its first no-grad
        # eval forward, after which its kernel has no backward: keep the method's own forwards off it
        handles += [swap_attr(mod, CPU_REPACK_FLAG, False) for mod in m.modules() if getattr(mod, CPU_REPACK_FLAG, False)]
        handles += [swap_attr(m, name, getattr(self, name)) for name in HUB_PARTS]
        return handles

    def loss(self, episodes: Sequence[Episode], loss_on: str = "query") -> tuple[torch.Tensor, dict[str, float]]:
        if torch.is_grad_enabled() and cpu_repacked(self.backbone.model):
            raise RuntimeError(
                "this 4-bit backbone was repacked by bitsandbytes for CPU inference (AVX512-BF16) during an earlier "
                "no-grad forward without the method attached; that kernel has no backward, so the gradients would be "
                "wrong. Reload the backbone and train before running it on its own.")
        return super().loss(episodes, loss_on=loss_on)

    # the plain layout (VanillaFT / VanillaICT); attached, so the image tokens always come from the copies
    def segments(self, episode: Episode, *, with_answer: bool, loss_on: str = "query") -> list[Segment]:
        with self.attached():
            return super().segments(episode, with_answer=with_answer, loss_on=loss_on)

    def batch(self, episodes: Sequence[Episode], *, with_answer: bool, padding_side: str = "right",
              loss_on: str = "query") -> AssembledBatch:
        with self.attached():  # one batched image encoding, as the backbone's own k-shot path
            return self.backbone.assemble_episodes([self.inference_episode(e) for e in episodes], with_answer=with_answer,
                                                   loss_on=loss_on, padding_side=padding_side)

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay on >= 2-D weights (incl. the query tokens), none on biases / LayerNorms."""
        params = self.trainable_parameters()
        s = self.config.lr_scale
        return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay, "lr_scale": s},
                {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "lr_scale": s}]

    def expected_num_parameters(self) -> int:
        return hub_parameter_count(self.backbone.model.config)

    # -- what the LM reads from the Q-Former (for notebooks and the app) --------------------------
    def hub_map(self, episode: Episode) -> list[dict]:
        """Per item of the (method's view of the) episode: which Q-Former output positions feed the
        LM (``slice`` 'text': the real text tokens [Q, Q + L_real); 'query': the query tokens [0, Q),
        per image), their tokens, and the (start, end) span they fill in the LM input."""
        ep = self.inference_episode(episode)
        items = list(ep.demos) + [ep.query]
        with torch.no_grad(), self.attached():
            spans = self.batch([ep], with_answer=True).spans[0]
            runs = run_mhub(self.backbone, [ex.images for ex in items], self._hub_texts(ep))
        out = []
        for i, (ex, run) in enumerate(zip(items, runs)):
            role = self._feature_role(i, len(items))
            lm = [(s, e) for r, it, s, e in spans if r == role and it == i]
            if role == "mhub_text":
                pos, toks = run.text_positions, qformer_tokens(self.backbone, run.text_ids)
                kind = "text"
            else:
                pos, toks = list(range(run.num_query)), [f"<query {j}>" for j in range(run.num_query)]
                kind = "query"
            out.append({"item": i, "is_query": i == len(items) - 1, "qformer_text": self._hub_texts(ep)[i],
                        "slice": kind, "qformer_positions": pos, "tokens": toks, "lm_role": role,
                        "lm_span": lm[0]})
        return out

    def _hub_texts(self, ep: Episode) -> list[str]:
        """The Q-Former's text per item: each item's instruction (its prompt)."""
        return [ex.prompt for ex in list(ep.demos) + [ep.query]]

    def _feature_role(self, item: int, n_items: int) -> str:
        return "image"


def hub_positions(method: HubTuned, episode: Episode) -> list[dict]:
    """Which Q-Former positions each item of ``episode`` contributes, their tokens, and their LM span."""
    return method.hub_map(episode)


# -- the three methods ----------------------------------------------------------------------------
@register_method
class VanillaFT(HubTuned):
    name = "vanilla-ft"
    config_class = VanillaFTConfig
    uses_demos = False
    summary = "fine-tune Q-Former + query tokens + projection on the query alone (BLIP-2 style), LM frozen"


@register_method
class VanillaICT(HubTuned):
    name = "vanilla-ict"
    config_class = VanillaICTConfig
    tiny_config = {"shots": 2, "train_shots": 2}
    uses_demos = True
    summary = "fine-tune the M-Hub on k-shot episodes; demos as raw image tokens + text (plain interleaved layout)"


@register_method
class MMICT(HubTuned):
    name = "mmict"
    config_class = MMICTConfig
    tiny_config = {"shots": 2, "train_shots": 2}
    uses_demos = True
    summary = "MMICT: demos as M-Hub text-token features, query as instruction-guided query tokens; M-Hub fine-tuned"

    def __init__(self, backbone, config: MMICTConfig | None = None):
        super().__init__(backbone, config)
        # <eoc>: the LM's own separator token where its vocabulary has one (frozen, as the official
        # code's <|endofchunk|>); else a trainable embedding, initialised to the mean LM embedding
        self.register_parameter("sep_embedding", None)
        if getattr(backbone, "sep_token_id", None) is None:
            table = backbone.language_model.get_input_embeddings().weight
            mean = table.detach().float().mean(0)  # (d_lm,)
            self.sep_embedding = nn.Parameter(mean.clone().to(backbone.device))

    def expected_num_parameters(self) -> int:
        extra = 0 if self.sep_embedding is None else self.sep_embedding.numel()
        return super().expected_num_parameters() + extra

    def _separator(self, item: int) -> Segment:
        """The <eoc> after demo ``item``: the LM's separator token, or the learned embedding."""
        if self.sep_embedding is None:
            return Segment("sep", item, ids=self.backbone._ids([self.backbone.sep_token_id]))
        return Segment("sep", item, embeds=self.sep_embedding[None])  # (1, d_lm)

    def _hub_texts(self, ep: Episode) -> list[str]:
        return [demo_text(ex) for ex in ep.demos] + [ep.query.prompt]

    def _feature_role(self, item: int, n_items: int) -> str:
        return "image" if item == n_items - 1 else "mhub_text"

    def hub_features(self, episodes: Sequence[Episode]) -> list[tuple[list[torch.Tensor], torch.Tensor]]:
        """Per episode, what the LM reads from the M-Hub: each demo's projected text-token features
        (L_i, d_lm) and the query's projected query-token features (Q, d_lm); one M-Hub call for all
        items of all episodes.  Computed with the M-Hub the backbone holds: call it attached (then it
        is this method's; an analysis may attach another method's hub inside, see
        scripts/probe_video_caption.py)."""
        items = [ex for ep in episodes for ex in list(ep.demos) + [ep.query]]
        texts = [t for ep in episodes for t in self._hub_texts(ep)]
        runs = iter(run_mhub(self.backbone, [ex.images for ex in items], texts))
        proj = self.backbone.model.language_projection  # the attached hub's projection
        out = []
        for ep in episodes:
            demos = [proj(next(runs).text_slice()) for _ in ep.demos]  # (L_real, d_q) -> (L_real, d_lm)
            out.append((demos, proj(next(runs).query_slice())))  # (Q, d_q) -> (Q, d_lm)
        return out

    def sequences(self, episodes: Sequence[Episode], *, with_answer: bool, loss_on: str = "query") -> list[list[Segment]]:
        """Segments of each episode (the M-Hub features from :meth:`hub_features`).  Demo answers live
        inside the demo features, so ``loss_on='all'`` trains the query answer only, as 'query' does."""
        if loss_on not in ("query", "all"):
            raise ValueError(f"loss_on must be 'query' or 'all', got {loss_on!r}")
        bb = self.backbone
        with self.attached():
            seqs = []
            for ep, (demo_feats, query_feats) in zip(episodes, self.hub_features(episodes)):
                segs = [Segment("bos", -1, ids=bb._ids([bb.bos_token_id]))] if bb.bos_token_id is not None else []
                for i, feats in enumerate(demo_feats):
                    segs.append(Segment("mhub_text", i, embeds=feats))  # (L_real, d_lm)
                    segs.append(self._separator(i))
                q, k = ep.query, ep.k
                segs.append(Segment("prompt", k, ids=bb._ids(bb.encode_text(q.prompt))))
                segs.append(Segment("image", k, embeds=query_feats))  # (Q, d_lm)
                if bb.answer_marker_ids:
                    segs.append(Segment("marker", k, ids=bb._ids(bb.answer_marker_ids)))
                if with_answer:
                    segs.append(Segment("answer", k, ids=bb._ids(bb.encode_text(q.answer) + [bb.eos_token_id]), train=True))
                seqs.append(segs)
        return seqs

    def segments(self, episode: Episode, *, with_answer: bool, loss_on: str = "query") -> list[Segment]:
        return self.sequences([episode], with_answer=with_answer, loss_on=loss_on)[0]

    def batch(self, episodes: Sequence[Episode], *, with_answer: bool, padding_side: str = "right",
              loss_on: str = "query") -> AssembledBatch:
        with self.attached():
            return self.backbone.assemble(self.sequences(episodes, with_answer=with_answer, loss_on=loss_on),
                                          padding_side=padding_side)
