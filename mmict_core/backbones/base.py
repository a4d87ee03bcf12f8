"""One interface over VLMs: encode images, embed text, assemble interleaved demos + query into one
input (embeddings + mask + labels), run, generate, and reach the decoder layers.

Sequences are built from *segments*: token ids (embedded with the LM's own table) or ready-made
embeddings (image tokens, M-Hub features, ...).  Every method assembles its input this way, so
where each demonstration's tokens land is recorded once, in :class:`ItemSpan`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..data import Episode, Example

IGNORE = -100


@dataclass
class Segment:
    """A run of positions: ``ids`` (text, embedded by the LM) or ``embeds`` ((n, d) features).

    ``train``: these positions are loss targets.  ``role``: 'bos', 'prompt', 'image', 'answer',
    'sep' or a method-specific name.  ``item``: index of the episode item (demos 0..k-1, query k).
    """

    role: str
    item: int
    ids: torch.Tensor | None = None  # (n,) long
    embeds: torch.Tensor | None = None  # (n, d)
    train: bool = False

    def __len__(self) -> int:
        return int(self.ids.numel() if self.ids is not None else self.embeds.shape[0])


@dataclass
class AssembledBatch:
    inputs_embeds: torch.Tensor  # (B, T, d)
    attention_mask: torch.Tensor  # (B, T) long, 1 = real position
    labels: torch.Tensor  # (B, T) target id at trained positions, IGNORE elsewhere
    token_ids: torch.Tensor  # (B, T) text ids; image_token_id at embedding positions; pad elsewhere
    spans: list[list[tuple[str, int, int, int]]] = field(default_factory=list)  # (role, item, start, end)

    def positions(self, b: int, role: str, item: int | None = None) -> list[int]:
        """Sequence positions of row ``b`` that carry ``role`` (of item ``item`` if given)."""
        out: list[int] = []
        for r, it, s, e in self.spans[b]:
            if r == role and (item is None or it == item):
                out.extend(range(s, e))
        return out


class VLMBackbone(ABC):
    """What every method needs from a VLM.  Subclasses wrap one transformers model class."""

    model: nn.Module
    image_size: int
    bos_token_id: int | None
    eos_token_id: int
    pad_token_id: int
    image_token_id: int
    answer_marker_ids: list[int] = []  # text between an item's image tokens and its answer

    # -- text ---------------------------------------------------------------------------------
    @abstractmethod
    def encode_text(self, text: str) -> list[int]:
        """LM token ids of ``text`` (no special tokens)."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of LM token ids (special tokens dropped)."""

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """LM input embeddings of token ids.  (..., d)"""
        return self.language_model.get_input_embeddings()(ids.to(self.device))

    # -- images -------------------------------------------------------------------------------
    @abstractmethod
    def encode_images(self, images: Sequence[np.ndarray], instructions: Sequence[str] | None = None) -> torch.Tensor:
        """Images (optionally guided by one instruction each) as LM-space tokens.  (N, n_img_tokens, d)"""

    # -- model parts (through the model's own accessors) ---------------------------------------
    @property
    def language_model(self) -> nn.Module:
        return self.model.language_model

    def decoder(self) -> nn.Module:
        dec = self.model.get_decoder()
        # some wrappers return the CausalLM; unwrap once more through its own accessor
        return dec.get_decoder() if not hasattr(dec, "layers") and hasattr(dec, "get_decoder") else dec

    def decoder_layers(self) -> nn.ModuleList:
        return self.decoder().layers

    def attention(self, layer: int) -> nn.Module:
        return self.decoder_layers()[layer].self_attn

    def mlp(self, layer: int) -> nn.Module:
        return self.decoder_layers()[layer].mlp

    def out_proj(self, layer: int) -> nn.Module:
        """The attention's output projection of ``layer``: its input is the heads' outputs side by
        side, (B, T, H·d_h).  ValueError where the attention module has none."""
        attn = self.attention(layer)
        for name in ("o_proj", "out_proj", "dense"):
            mod = getattr(attn, name, None)
            if isinstance(mod, nn.Module):
                return mod
        raise ValueError(f"{type(attn).__name__} has no output projection (o_proj/out_proj): per-head methods cannot run")

    def fingerprint(self) -> str:
        """Identity of the backbone for adapters: LM architecture + vocabulary + input-embedding
        weights (never quantised), so fp32 / 8-bit / 4-bit loads of one checkpoint agree."""
        import hashlib
        import json as _json

        cfg = self.text_config
        arch = {k: getattr(cfg, k, None) for k in ("model_type", "hidden_size", "num_hidden_layers",
                                                    "num_attention_heads", "num_key_value_heads", "vocab_size")}
        h = hashlib.sha256(_json.dumps(arch, sort_keys=True).encode())
        w = self.language_model.get_input_embeddings().weight.detach().float().cpu().contiguous()
        h.update(w.numpy().tobytes())
        return h.hexdigest()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def text_config(self):
        return self.model.config.get_text_config()

    @property
    def context_length(self) -> int | None:
        """Longest sequence the LM accepts (None when unbounded)."""
        return getattr(self.text_config, "max_position_embeddings", None)

    @property
    def hidden_size(self) -> int:
        return int(self.text_config.hidden_size)

    @property
    def num_layers(self) -> int:
        """Decoder layers of the LM (counted through the model's own accessor)."""
        return len(self.decoder_layers())

    @property
    def num_heads(self) -> int:
        """Query heads per decoder attention (GQA key/value heads are repeated to this many)."""
        return int(self.text_config.num_attention_heads)

    @property
    def head_dim(self) -> int:
        """Width of one attention head: the attention module's own ``head_dim``, else the config's,
        else hidden_size / heads."""
        d = getattr(self.attention(0), "head_dim", None) or getattr(self.text_config, "head_dim", None)
        return int(d or self.hidden_size // self.num_heads)

    # -- assembly -----------------------------------------------------------------------------
    def episode_segments(self, episode: Episode, *, with_answer: bool, loss_on: str = "query",
                         image_tokens: list[torch.Tensor] | None = None) -> list[Segment]:
        """Plain interleaved ICL: ``[BOS] (prompt, image, marker, answer [EOS])* prompt, image, marker [answer [EOS]]``.

        Each item reads *prompt, image, answer*: the answer follows its image tokens, after the
        backbone's answer marker (the teaching VLM's ``<answer>`` token; none for real checkpoints).
        The marker is a text position, so the logit of the answer's first token is read from a
        residual stream that attention writes into, not from an image embedding that dwarfs it.
        ``loss_on``: 'query' (the query's answer only) or 'all' (every demo's answer too).
        ``image_tokens``: precomputed :meth:`encode_images` output per item (one (n_img, n_tok, d)
        tensor each); computed here when None.
        """
        if loss_on not in ("query", "all"):
            raise ValueError(f"loss_on must be 'query' or 'all', got {loss_on!r}")
        items = list(episode.demos) + [episode.query]
        if image_tokens is None:
            image_tokens = self.encode_items(items)
        segs: list[Segment] = []
        if self.bos_token_id is not None:
            segs.append(Segment("bos", -1, ids=self._ids([self.bos_token_id])))
        for i, (ex, img) in enumerate(zip(items, image_tokens)):
            is_query = i == len(items) - 1
            segs.append(Segment("prompt", i, ids=self._ids(self.encode_text(ex.prompt))))
            segs.append(Segment("image", i, embeds=img.reshape(-1, img.shape[-1])))
            if self.answer_marker_ids:
                segs.append(Segment("marker", i, ids=self._ids(self.answer_marker_ids)))
            if not is_query or with_answer:
                trained = is_query or loss_on == "all"
                segs.append(Segment("answer", i, ids=self._ids(self.encode_text(ex.answer) + [self.eos_token_id]), train=trained))
        return segs

    @torch.no_grad()
    def retrieval_embedding(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Image embeddings for similarity (RICES-style) demonstration selection: the mean of each
        image's LM-space tokens (no instruction).  Backbones with a better pooled vision feature
        override it.  (N, d)"""
        return self.encode_images(list(images)).float().mean(dim=1).cpu().numpy()  # (N, n_tok, d) -> (N, d)

    def encode_items(self, items: Sequence[Example]) -> list[torch.Tensor]:
        """Image tokens of every item in one batched call; item i gets (n_images_i, n_tok, d).
        With gradients off inside a :func:`~.encoding_cache.use_encoding_cache` block, a call
        with the same items (and vision state) as an earlier one reuses its result."""
        from .encoding_cache import active_cache

        cache = active_cache() if not torch.is_grad_enabled() else None
        if cache is None:
            return self._encode_items(items)
        key = cache.key(self, items)
        hit = cache.get(self, key)
        if hit is not None:
            return hit
        out = self._encode_items(items)
        cache.put(self, key, out)
        return out

    def _encode_items(self, items: Sequence[Example]) -> list[torch.Tensor]:
        images = [im for ex in items for im in ex.images]
        instr = [ex.prompt for ex in items for _ in ex.images]
        feats = self.encode_images(images, instr)
        out, s = [], 0
        for ex in items:
            out.append(feats[s:s + len(ex.images)])
            s += len(ex.images)
        return out

    @property
    def num_image_tokens(self) -> int:
        """LM tokens per image (fixed: every image is resized to ``image_size``); one blank image
        is encoded the first time it is asked."""
        if getattr(self, "_n_image_tokens", None) is None:
            with torch.no_grad():
                blank = np.zeros((self.image_size, self.image_size, 3), dtype=np.uint8)
                self._n_image_tokens = int(self.encode_images([blank], ["describe"]).shape[1])
        return self._n_image_tokens

    def segment_lengths(self, episode: Episode, *, with_answer: bool) -> list[tuple[str, int, int]]:
        """(role, item, length) of each segment of :meth:`episode_segments`, without encoding an
        image: the image segments get placeholders of :attr:`num_image_tokens` rows each."""
        items = list(episode.demos) + [episode.query]
        shapes = [torch.zeros(len(ex.images), self.num_image_tokens, 1) for ex in items]  # (n_img, n_tok, 1)
        return [(s.role, s.item, len(s)) for s in self.episode_segments(episode, with_answer=with_answer, image_tokens=shapes)]

    def check_fits(self, n_tokens: int) -> None:
        """ValueError when an input of ``n_tokens`` positions exceeds the LM's context."""
        limit = self.context_length
        if limit is not None and n_tokens > limit:
            raise ValueError(
                f"the assembled input is {n_tokens} tokens but the model's context holds {limit}; "
                f"use fewer demonstrations (or a method that compresses them)"
            )

    def _ids(self, ids: Sequence[int]) -> torch.Tensor:
        return torch.tensor(list(ids), dtype=torch.long)

    def assemble(self, sequences: Sequence[Sequence[Segment]], padding_side: str = "right") -> AssembledBatch:
        """Concatenate each sequence's segments and pad the batch (left padding for generation)."""
        if padding_side not in ("left", "right"):
            raise ValueError("padding_side must be 'left' or 'right'")
        emb_layer = self.language_model.get_input_embeddings()
        d = emb_layer.weight.shape[1]
        dtype = emb_layer.weight.dtype if emb_layer.weight.is_floating_point() else torch.float32
        dev = self.device
        # embed all text segments of the batch in one call
        text = [s for seq in sequences for s in seq if s.ids is not None]
        if text:
            flat = torch.cat([s.ids for s in text]).to(dev)
            flat_emb = emb_layer(flat)  # (sum_n, d)
            text_emb = list(torch.split(flat_emb, [len(s) for s in text]))
        t_iter = iter(text_emb if text else [])
        rows, lengths = [], []
        for seq in sequences:
            parts, ids, labels, spans, pos = [], [], [], [], 0
            for s in seq:
                n = len(s)
                if s.ids is not None:
                    parts.append(next(t_iter))
                    ids.append(s.ids)
                    labels.append(s.ids if s.train else torch.full((n,), IGNORE))
                else:
                    parts.append(s.embeds.to(dev, dtype))
                    ids.append(torch.full((n,), self.image_token_id))
                    if s.train:
                        raise ValueError("embedding segments cannot be loss targets")
                    labels.append(torch.full((n,), IGNORE))
                spans.append((s.role, s.item, pos, pos + n))
                pos += n
            rows.append((torch.cat(parts), torch.cat(ids), torch.cat(labels), spans))
            lengths.append(pos)
        T = max(lengths)
        self.check_fits(T)
        B = len(rows)
        embeds = torch.zeros(B, T, d, device=dev, dtype=dtype)
        mask = torch.zeros(B, T, dtype=torch.long, device=dev)
        labels = torch.full((B, T), IGNORE, dtype=torch.long, device=dev)
        token_ids = torch.full((B, T), self.pad_token_id, dtype=torch.long, device=dev)
        all_spans = []
        for b, ((e, i, l, spans), n) in enumerate(zip(rows, lengths)):
            off = T - n if padding_side == "left" else 0
            embeds[b, off:off + n] = e
            mask[b, off:off + n] = 1
            labels[b, off:off + n] = l.to(dev)
            token_ids[b, off:off + n] = i.to(dev)
            all_spans.append([(r, it, s + off, e_ + off) for r, it, s, e_ in spans])
        return AssembledBatch(embeds, mask, labels, token_ids, all_spans)

    def assemble_episodes(self, episodes: Sequence[Episode], *, with_answer: bool, loss_on: str = "query",
                          padding_side: str = "right") -> AssembledBatch:
        items = [ex for ep in episodes for ex in list(ep.demos) + [ep.query]]
        feats = self.encode_items(items)
        seqs, s = [], 0
        for ep in episodes:
            n = ep.k + 1
            seqs.append(self.episode_segments(ep, with_answer=with_answer, loss_on=loss_on, image_tokens=feats[s:s + n]))
            s += n
        return self.assemble(seqs, padding_side=padding_side)

    # -- running ------------------------------------------------------------------------------
    def forward(self, batch: AssembledBatch, **kwargs) -> torch.Tensor:
        """LM logits of an assembled batch.  (B, T, V)"""
        pos = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.language_model(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask,
                                  position_ids=pos, use_cache=False, **kwargs)
        return out.logits

    def loss(self, batch: AssembledBatch, logits: torch.Tensor | None = None) -> torch.Tensor:
        """Mean next-token cross-entropy over the labelled positions."""
        logits = self.forward(batch) if logits is None else logits
        return nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(), batch.labels[:, 1:].reshape(-1), ignore_index=IGNORE
        )

    @torch.no_grad()
    def generate_from(self, batch: AssembledBatch, max_new_tokens: int = 10, num_beams: int = 1) -> list[str]:
        """Greedy (or beam) continuation of a *left-padded* assembled batch, cut at EOS."""
        if batch.attention_mask[:, -1].min() == 0:
            raise ValueError("generation needs a left-padded batch (assemble(..., padding_side='left'))")
        out = self.language_model.generate(
            inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask,
            max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
            eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id,
        )
        texts = []
        for row in out.tolist():
            if self.eos_token_id in row:
                row = row[: row.index(self.eos_token_id)]
            texts.append(self.decode(row))
        return texts

    def generate(self, episodes: Sequence[Episode], max_new_tokens: int = 10, num_beams: int = 1) -> list[str]:
        """The model's answer to each episode's query."""
        batch = self.assemble_episodes(episodes, with_answer=False, padding_side="left")
        return self.generate_from(batch, max_new_tokens=max_new_tokens, num_beams=num_beams)
