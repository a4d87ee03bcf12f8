"""Stage (experimental, off in the recipe): text-only associative recall for the LM, laid out like
binding demos, so induction heads could exist before the episodes ask for them with pixels as keys.
Kept for study: from the next-token loss it did not get binding past the copy-a-shown-word plateau
(see the model card); the auxiliary losses of :mod:`.auxiliary` did."""
from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..backbones.teaching import TeachingVLM
from ..data import shapes as sw
from ..data import vocabulary
from ..data.tasks import NONSENSE_WORDS
from ..train import clip_or_diverge
from .config import PretrainConfig


def induction_batch(vlm: TeachingVLM, rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Associative recall in words, laid out like binding demos: ``[BOS] (key filler* marker value
    [EOS])* key filler* marker`` -> value, with colour words as keys and nonsense words as values
    bound afresh in each sequence.  Labels only where the value is predictable (its key seen
    before).  Returns ids, attention mask and labels, (n, T) each (labels -100 elsewhere)."""
    tok = vlm.tokenizer.token_to_id
    keys = [tok(c) for c in sw.COLOURS]
    values = [tok(w) for w in NONSENSE_WORDS]
    reserved = set(keys) | set(values)
    filler = [i for i in (tok(w) for w in vocabulary()) if i is not None and i not in reserved]
    marker = list(vlm.answer_marker_ids)
    seqs, labs = [], []
    for _ in range(n):
        way = int(rng.integers(2, 5))
        ks = rng.choice(keys, way, replace=False)
        vs = rng.choice(values, way, replace=False)
        ids, lab, seen = [vlm.bos_token_id], [-100], set()
        for it in rng.integers(0, way, int(rng.integers(2, 10))):
            pre = [int(ks[it])] + [int(f) for f in rng.choice(filler, int(rng.integers(0, 3)))] + marker
            ids += pre
            lab += [-100] * len(pre)
            known = int(it) in seen
            ids += [int(vs[it]), vlm.eos_token_id]
            lab += [int(vs[it]) if known else -100, vlm.eos_token_id]
            seen.add(int(it))
        seqs.append(ids)
        labs.append(lab)
    T = max(map(len, seqs))
    ids = torch.full((n, T), vlm.pad_token_id, dtype=torch.long)
    labels = torch.full((n, T), -100, dtype=torch.long)
    mask = torch.zeros((n, T), dtype=torch.long)
    for r, (a, b) in enumerate(zip(seqs, labs)):
        ids[r, :len(a)], labels[r, :len(b)], mask[r, :len(a)] = torch.tensor(a), torch.tensor(b), 1
    return ids, mask, labels


def induction_stage(vlm: TeachingVLM, cfg: PretrainConfig, log: list, progress: bool = True) -> None:
    """Train the LM alone on :func:`induction_batch` so that induction heads (match an earlier key,
    copy what followed it) exist before the episodes ask for them with pixels as keys."""
    lm = vlm.language_model
    params = [p for p in lm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.induction_lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    rng = np.random.default_rng([cfg.seed, 77])
    lm.train()
    for step in tqdm(range(cfg.induction_steps), desc="induction", mininterval=5, disable=not progress):
        ids, mask, labels = induction_batch(vlm, rng, cfg.induction_batch)
        logits = lm(input_ids=ids.to(vlm.device), attention_mask=mask.to(vlm.device)).logits  # (B, T, V)
        tgt = labels[:, 1:].to(vlm.device)
        loss = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), tgt.flatten(), ignore_index=-100)
        warm = min(1.0, (step + 1) / 100)
        for g in opt.param_groups:
            g["lr"] = cfg.induction_lr * warm
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_or_diverge(params, cfg.clip, loss, step)
        opt.step()
        if step % 250 == 0 or step == cfg.induction_steps - 1:
            with torch.no_grad():
                hit = (logits[:, :-1].argmax(-1) == tgt) & (tgt != -100) & (tgt != vlm.eos_token_id)
                n_val = ((tgt != -100) & (tgt != vlm.eos_token_id)).sum().clamp(min=1)
            log.append({"stage": "induction", "step": step, "loss": round(loss.item(), 4),
                        "value_acc": round((hit.sum() / n_val).item(), 3)})
            if step % 1000 == 0 or step == cfg.induction_steps - 1:
                print(json.dumps(log[-1]), flush=True)
