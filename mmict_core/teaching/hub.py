"""Stage: the M-Hub's text path, in the spirit of BLIP-2's first stage.

MMICT feeds each demonstration to the LM as the Q-Former's *text-token* outputs over the demo's
full text ("prompt answer"), which read the image only through the query tokens in self-attention.
BLIP-2 / InstructBLIP train that text path before anything reads it; this stage does the same
on the teaching world, with the ViT frozen:

- ITG, image-grounded text generation: queries see queries only, each text token sees every query
  and the text before it; a throw-away linear head predicts the next text token from each
  text-token output (so the text path must carry what the image says about the words to come);
- ITM, image-text matching: the bidirectional run (as MMICT runs it); a throw-away linear head on
  the mean text-token output tells matched pairs from pairs whose image belongs to another item of
  the same task.

:func:`mhub_probe` then measures the premise itself: a linear read-out of a single object's colour
and shape from the mean text-token output of a binding demonstration ("what is this ? dax") on
held-out scenes.
"""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..backbones.teaching import TeachingVLM
from ..data import Example, make_episode
from ..data import shapes as sw
from ..data.tasks import NONSENSE_WORDS
from ..train import clip_or_diverge
from .cells import CellReadout, cell_step
from .config import HUB_MIX, PretrainConfig

HUB_INDEX_OFFSET = 10_000_000  # episode indices of this stage's items (apart from the episode stage's)


def hub_items(cfg: PretrainConfig, step: int) -> list[Example]:
    """``hub_batch`` training items drawn from :data:`HUB_MIX` (deterministic in seed and step)."""
    rng = np.random.default_rng([cfg.seed, 55, step])
    names, w = list(HUB_MIX), np.array(list(HUB_MIX.values()))
    tasks = [names[i] for i in rng.choice(len(names), size=cfg.hub_batch, p=w / w.sum())]
    return [make_episode(t, 0, seed=cfg.seed, index=HUB_INDEX_OFFSET + step * cfg.hub_batch + i, split="train",
                         pool_size=1).query for i, t in enumerate(tasks)]


def item_memory(vlm: TeachingVLM, items: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each item's frames' vision states concatenated along the token axis (MMICT's video path),
    right-padded: memory (N, F_max * S, d_v) and its mask (N, F_max * S)."""
    with torch.no_grad():
        vis = vlm.vision_states([im for ex in items for im in ex.images])  # (sum F, S, d_v)
    per = torch.split(vis, [len(ex.images) for ex in items])
    S, d = vis.shape[1:]
    n_max = max(len(ex.images) for ex in items)
    mem = vis.new_zeros(len(items), n_max * S, d)
    mask = torch.zeros(len(items), n_max * S, dtype=torch.long, device=vis.device)
    for i, v in enumerate(per):
        mem[i, : v.shape[0] * S] = v.reshape(-1, d)
        mask[i, : v.shape[0] * S] = 1
    return mem, mask


def qformer_run(vlm: TeachingVLM, memory: torch.Tensor, memory_mask: torch.Tensor, ids: torch.Tensor,
                text_mask: torch.Tensor, causal: bool) -> torch.Tensor:
    """The Q-Former over ``[query tokens ; text]`` with an explicit mask.  causal=False: every
    position sees every real position (InstructBLIP, MMICT).  causal=True (ITG): queries see
    queries only, text token j sees every query and text tokens <= j.  Returns (N, Q + L, d_q)."""
    n, L = ids.shape
    q = vlm.model.query_tokens.expand(n, -1, -1)  # (N, Q, d_q)
    Q = q.shape[1]
    real = torch.cat([torch.ones(n, Q, dtype=torch.bool, device=ids.device), text_mask.bool()], 1)  # (N, T)
    allow = real[:, None, :].expand(n, Q + L, Q + L).clone()  # (N, T_query, T_key): keys must be real
    if causal:
        shape = torch.zeros(Q + L, Q + L, dtype=torch.bool, device=ids.device)
        shape[:, :Q] = True  # everyone sees the queries ...
        shape[:Q, Q:] = False  # ... queries do not see the text
        shape[Q:, Q:] = torch.tril(torch.ones(L, L, dtype=torch.bool, device=ids.device))
        allow &= shape
    dtype = vlm.model.query_tokens.dtype
    bias = torch.zeros(n, 1, Q + L, Q + L, dtype=dtype, device=ids.device).masked_fill(~allow[:, None], torch.finfo(dtype).min)
    out = vlm.model.qformer(input_ids=ids, attention_mask=bias, query_embeds=q, encoder_hidden_states=memory,
                            encoder_attention_mask=memory_mask)
    return out.last_hidden_state


class HubHeads(nn.Module):
    """Throw-away heads of the stage (not part of the saved model)."""

    def __init__(self, d: int, vocab: int):
        super().__init__()
        self.itg = nn.Linear(d, vocab)
        self.itm = nn.Linear(d, 2)


def _same_task_roll(items: Sequence[Example]) -> list[int]:
    """For each item, another item of the same task (the next one of that task in the batch), or
    itself when the task occurs once (then the pair is dropped)."""
    by: dict[str, list[int]] = {}
    for i, ex in enumerate(items):
        by.setdefault(ex.task, []).append(i)
    partner = list(range(len(items)))
    for idx in by.values():
        for a, b in zip(idx, idx[1:] + idx[:1]):
            partner[a] = b
    return partner


def hub_losses(vlm: TeachingVLM, heads: HubHeads, items: Sequence[Example], text_negatives: bool = False,
               mlm_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor]:
    """(ITG loss, ITM loss, ITM accuracy, masked-answer loss) on one batch of items.  The masked-answer
    loss (``mlm_weight`` > 0): the answer's words replaced by [UNK], predicted from the text-token
    outputs of the bidirectional run (the run MMICT reads), so the text positions learn to fetch what
    the image says.  ITM's negatives: each text with a
    same-task item's image, and (``text_negatives``) each image with the same prompt but a
    same-task item's answer (when the answers differ): the hard case, where only the grounded
    words tell the pair from a match."""
    texts = [f"{ex.prompt} {ex.answer}" for ex in items]
    ids, tmask = vlm.qformer_text(texts)  # (N, L)
    mem, mmask = item_memory(vlm, items)
    Q = vlm.model.query_tokens.shape[1]
    # ITG: next text token from each text-token output
    h = qformer_run(vlm, mem, mmask, ids, tmask, causal=True)[:, Q:]  # (N, L, d_q)
    logits = heads.itg(h[:, :-1])  # (N, L-1, V)
    tgt = ids[:, 1:].masked_fill(tmask[:, 1:] == 0, -100)
    itg = nn.functional.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=-100)
    # ITM: matched pairs vs the same text with another same-task item's image
    partner = _same_task_roll(items)
    keep = [i for i, p in enumerate(partner) if p != i]
    neg_mem, neg_mask = mem[[partner[i] for i in keep]], mmask[[partner[i] for i in keep]]
    all_mem = torch.cat([mem, neg_mem])
    all_mmask = torch.cat([mmask, neg_mask])
    all_ids, all_tmask = torch.cat([ids, ids[keep]]), torch.cat([tmask, tmask[keep]])
    n_neg = len(keep)
    if text_negatives:  # the item's own image, its prompt, another item's answer
        swap = [i for i in keep if items[partner[i]].answer != items[i].answer]
        if swap:
            sids, smask = vlm.qformer_text([f"{items[i].prompt} {items[partner[i]].answer}" for i in swap])
            L = max(all_ids.shape[1], sids.shape[1])
            pad = lambda t: nn.functional.pad(t, (0, L - t.shape[1]))  # noqa: E731  right-pad ids / masks to L
            all_ids, all_tmask = torch.cat([pad(all_ids), pad(sids)]), torch.cat([pad(all_tmask), pad(smask)])
            all_mem, all_mmask = torch.cat([all_mem, mem[swap]]), torch.cat([all_mmask, mmask[swap]])
            n_neg += len(swap)
    mlm = itg.new_zeros(())
    if mlm_weight:  # the answer's words masked, predicted from the bidirectional run's text outputs
        unk = vlm.tokenizer.token_to_id("[UNK]")
        n_prompt = [len(vlm.encode_text(ex.prompt)) for ex in items]
        masked = ids.clone()
        target = torch.full_like(ids, -100)
        for r, (n0, n1) in enumerate(zip(n_prompt, tmask.sum(1).tolist())):
            masked[r, n0:n1] = unk
            target[r, n0:n1] = ids[r, n0:n1]
        hm = qformer_run(vlm, mem, mmask, masked, tmask, causal=False)[:, Q:]  # (N, L, d_q)
        mlm = nn.functional.cross_entropy(heads.itg(hm).flatten(0, 1), target.flatten(), ignore_index=-100)
    hb = qformer_run(vlm, all_mem, all_mmask, all_ids, all_tmask, causal=False)[:, Q:]  # (N', L, d_q)
    m = all_tmask.unsqueeze(-1).to(hb.dtype)
    pooled = (hb * m).sum(1) / m.sum(1).clamp(min=1)  # (N', d_q) mean over real text tokens
    lab = torch.cat([torch.ones(len(items)), torch.zeros(n_neg)]).long().to(hb.device)
    itm_logits = heads.itm(pooled)
    itm = nn.functional.cross_entropy(itm_logits, lab)
    acc = (itm_logits.argmax(-1) == lab).float().mean().item()
    return itg, itm, acc, mlm


def hub_stage(vlm: TeachingVLM, cfg: PretrainConfig, log: list, progress: bool = True,
              cell_head: CellReadout | None = None) -> None:
    """Train the Q-Former (and its query tokens) with ITG + ITM (+ masked answers, + the per-cell
    read-out of the image tokens when ``cell_head`` is given); the ViT and the LM are untouched."""
    model = vlm.model
    d, vocab = model.config.qformer_config.hidden_size, model.config.qformer_config.vocab_size
    heads = HubHeads(d, vocab).to(vlm.device)
    params = list(model.qformer.parameters()) + [model.query_tokens] + list(heads.parameters())
    params += list(cell_head.parameters()) if cell_head is not None else []
    opt = torch.optim.AdamW(params, lr=cfg.hub_lr, weight_decay=cfg.weight_decay)
    model.qformer.train()
    itg_ema = itm_ema = acc_ema = mlm_ema = cell_ema = None
    for step in tqdm(range(cfg.hub_steps), desc="M-Hub text path", mininterval=5, disable=not progress):
        itg, itm, acc, mlm = hub_losses(vlm, heads, hub_items(cfg, step), cfg.hub_text_negatives, cfg.hub_mlm)
        loss = cfg.hub_itg * itg + cfg.hub_itm * itm + cfg.hub_mlm * mlm
        if cell_head is not None:
            cells, cell_acc = cell_step(vlm, cell_head, cfg.seed, "hub", step, cfg.cell_batch, frozen_vision=True)
            loss = loss + cfg.cell_loss * cells
            cell_ema = cell_acc if cell_ema is None else 0.95 * cell_ema + 0.05 * cell_acc
        warm = min(1.0, (step + 1) / 50)
        for g in opt.param_groups:
            g["lr"] = cfg.hub_lr * warm * 0.5 * (1 + np.cos(np.pi * step / max(1, cfg.hub_steps)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_or_diverge(params, cfg.clip, loss, step)
        opt.step()
        e = lambda old, new: new if old is None else 0.95 * old + 0.05 * new  # noqa: E731
        itg_ema, itm_ema, acc_ema = e(itg_ema, itg.item()), e(itm_ema, itm.item()), e(acc_ema, acc)
        mlm_ema = e(mlm_ema, mlm.item())
        if step % 50 == 0 or step == cfg.hub_steps - 1:
            log.append({"stage": "hub", "step": step, "itg": round(itg_ema, 4), "itm": round(itm_ema, 4),
                        "itm_acc": round(acc_ema, 3), **({"mlm": round(mlm_ema, 4)} if cfg.hub_mlm else {}),
                        **({"cell_acc": round(cell_ema, 3)} if cell_ema is not None else {})})
            if step % 200 == 0 or step == cfg.hub_steps - 1:
                print(json.dumps(log[-1]), flush=True)
    model.qformer.eval()


@torch.no_grad()
def mhub_probe(vlm: TeachingVLM, n: int = 900, seed: int = 123) -> dict:
    """Linear read-out (logistic regression, 2:1 split) of a single object's colour and shape from
    the mean text-token output of the Q-Former run MMICT makes for a binding demonstration
    ("what is this ? <fresh word>", bidirectional), on fresh scenes.  Also the same read-out from
    the query-token outputs, for reference."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    scenes = [sw.sample_scene(rng, n_objects=1) for _ in range(n)]
    texts = [f"what is this ? {NONSENSE_WORDS[rng.integers(len(NONSENSE_WORDS))]}" for _ in range(n)]
    feats_t, feats_q = [], []
    Q = vlm.model.query_tokens.shape[1]
    for s in range(0, n, 128):
        states, tmask = vlm.qformer_states([sc.render() for sc in scenes[s:s + 128]], texts[s:s + 128])
        m = tmask.unsqueeze(-1).to(states.dtype)
        feats_t.append(((states[:, Q:] * m).sum(1) / m.sum(1)).float().cpu().numpy())  # (b, d_q)
        feats_q.append(states[:, :Q].mean(1).float().cpu().numpy())
    out = {}
    cut = 2 * n // 3
    for name, X in (("text", np.concatenate(feats_t)), ("query", np.concatenate(feats_q))):
        for attr in ("colour", "shape"):
            y = np.array([getattr(sc.objects[0], attr) for sc in scenes])
            sc_ = StandardScaler().fit(X[:cut])
            clf = LogisticRegression(max_iter=2000).fit(sc_.transform(X[:cut]), y[:cut])
            out[f"{name}_{attr}"] = round(float(clf.score(sc_.transform(X[cut:]), y[cut:])), 3)
    return out
