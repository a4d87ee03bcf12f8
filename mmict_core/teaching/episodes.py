"""Stage: episodes.  The whole VLM learns from interleaved episodes of 0-8 demonstrations mixing
every pretraining task, with the next-token loss on every answer that something before it
determines (a demo's answer at position j is a j-shot prediction), so in-context learning is
learned, not built in.  Clip episodes (4-8 frames an item) carry at most ``clip_max_shots`` demos."""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..backbones.teaching import TeachingVLM
from ..data import make_episode
from ..data import shapes as sw
from ..data.tasks import Binding, episode_rng
from ..train import clip_or_diverge
from .config import PretrainConfig

CLIP_TASKS = ("clip-qa", "clip-caption")


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up, then cosine from 1 to ``min_lr_ratio``."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(p, 1.0)))


def training_episodes(cfg: PretrainConfig, step: int):
    rng = episode_rng(cfg.seed, "train", "pretrain-mix", step)
    names, w = list(cfg.mix), np.array(list(cfg.mix.values()))
    eps = []
    for b in range(cfg.batch):
        task = names[rng.choice(len(names), p=w / w.sum())]
        k = int(rng.integers(0, (cfg.clip_max_shots if task in CLIP_TASKS else cfg.max_shots) + 1))
        if task in ("binding", "binding-cued"):
            # more words per episode make "copy a shown word" fail more often than "match the colour";
            # 'binding-cued' names the colour in the prompt too (a word key: an easier curriculum step)
            task = Binding(n_way=int(rng.integers(cfg.binding_ways[0], cfg.binding_ways[1] + 1)),
                           cue_in_prompt=task == "binding-cued")
        eps.append(make_episode(task, k, seed=cfg.seed, index=step * cfg.batch + b, split="train", pool_size=max(k, 1)))
    return eps


class _StepEpisodes(torch.utils.data.Dataset):
    def __init__(self, cfg: PretrainConfig):
        self.cfg = cfg

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int):
        return training_episodes(self.cfg, step)


@contextlib.contextmanager
def prefetched_episodes(cfg: PretrainConfig, workers: int = 1):
    """The episode stream, step 0, 1, ..., drawn ahead in ``workers`` background processes (the
    same episodes as :func:`training_episodes`; drawing them costs about a quarter of a step)."""
    loader = torch.utils.data.DataLoader(_StepEpisodes(cfg), batch_size=None, shuffle=False, num_workers=workers,
                                         prefetch_factor=4 if workers else None, collate_fn=lambda x: x,
                                         persistent_workers=False)
    it = iter(loader)
    try:
        yield it
    finally:
        del it


def unpredictable_items(episode) -> set[int]:
    """Demo answers that nothing before them determines: the first demo of a format or operator
    episode (style / operator not shown yet) and each binding demo whose category has not appeared
    yet, and the binding query when no demo showed its category.  They get no loss: training on
    them teaches a prior guess instead of reading the demonstrations."""
    if episode.task in ("format", "operator"):
        return {0} if episode.demos else set()
    if episode.task == "binding":
        seen, skip = set(), set()
        for i, d in enumerate(list(episode.demos) + [episode.query]):
            if d.label not in seen:
                skip.add(i)  # the query (item k) too, when its colour was never shown
            seen.add(d.label)
        return skip
    return set()


def training_batch(vlm: TeachingVLM, episodes):
    """Assembled episodes with the loss on every predictable answer (demos and query)."""
    items = [ex for ep in episodes for ex in list(ep.demos) + [ep.query]]
    feats = vlm.encode_items(items)
    seqs, s = [], 0
    for ep in episodes:
        n = ep.k + 1
        segs = vlm.episode_segments(ep, with_answer=True, loss_on="all", image_tokens=feats[s:s + n])
        skip = unpredictable_items(ep)
        for seg in segs:
            if seg.role == "answer" and seg.item in skip:
                seg.train = False
        seqs.append(segs)
        s += n
    return vlm.assemble(seqs)


@torch.no_grad()
def rescale_image_tokens(vlm: TeachingVLM, norm: float, seed: int) -> float:
    """Scale the language projection (weight and bias) so the image tokens of 64 training scenes
    have mean L2 norm ``norm``; returns the factor.  Image tokens far larger than word embeddings
    drown what attention writes into their residual stream."""
    rng = np.random.default_rng(seed)
    images = [sw.render_scene(sw.sample_scene(rng)) for _ in range(64)]
    feats = vlm.encode_images(images)  # (64, Q, d)
    factor = norm / float(feats.norm(dim=-1).mean())
    proj = vlm.model.language_projection
    proj.weight.mul_(factor)
    if proj.bias is not None:
        proj.bias.mul_(factor)
    return factor


PROBES = {"shapes-vqa": [0], "binding": [0, 4, 8], "format": [0, 2], "operator": [4], "digits": [0],
          "clip-qa": [0], "clip-caption": [0]}


def quick_eval(vlm: TeachingVLM, n: int, seed: int) -> dict:
    """Accuracy on ``n`` validation episodes per probe (task@shots)."""
    from ..evaluate.icl import evaluate_icl

    out = {}
    for task, shots in PROBES.items():
        for r in evaluate_icl(vlm, task, shots, episodes=n, seed=seed, split="val", progress=False):
            out[f"{task}@{r.shots}"] = round(r.accuracy, 3)
    return out


def episode_stage(vlm: TeachingVLM, cfg: PretrainConfig, log: list, out, progress: bool = True,
                  cell_head=None) -> None:
    """Train on the episode stream (with the auxiliary binding losses when their weights are > 0,
    and the per-cell read-out of the image tokens when ``cell_head`` is given); a probe and a
    snapshot every ``eval_every`` steps."""
    from .cells import cell_step
    from .auxiliary import KeyLoss, attention_capture, copy_loss, head_output_capture, match_loss, residual_capture

    model = vlm.model
    n_layers, n_heads = vlm.text_config.num_hidden_layers, vlm.text_config.num_attention_heads
    if cfg.key_loss and cfg.key_layer >= n_layers:
        raise ValueError(f"key_layer must be below the LM's {n_layers} layers, got {cfg.key_layer}")
    if (cfg.match_loss or cfg.copy_loss) and (cfg.match_layer >= n_layers or cfg.match_head >= n_heads):
        raise ValueError(f"match_layer / match_head must be below {n_layers} / {n_heads}, "
                         f"got {cfg.match_layer} / {cfg.match_head}")
    vision_params = list(model.vision_model.parameters())
    vid = {id(p) for p in vision_params}
    rest = [p for p in model.parameters() if id(p) not in vid]
    groups = [
        {"params": [p for p in rest if p.ndim >= 2], "weight_decay": cfg.weight_decay, "scale": 1.0},
        {"params": [p for p in rest if p.ndim < 2], "weight_decay": 0.0, "scale": 1.0},
        {"params": vision_params, "weight_decay": cfg.weight_decay, "scale": cfg.vision_lr_scale},
    ]
    key_head = KeyLoss(vlm.hidden_size).to(vlm.device) if cfg.key_loss else None
    if key_head is not None:
        groups.append({"params": list(key_head.parameters()), "weight_decay": 0.0, "scale": 1.0})
    if cell_head is not None:
        groups.append({"params": list(cell_head.parameters()), "weight_decay": 0.0, "scale": 1.0})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98))
    t0 = time.time()
    ema = key_ema = match_ema = copy_ema = cell_ema = None
    model.train()
    model.vision_model.eval()
    with contextlib.ExitStack() as stack:
        res = stack.enter_context(residual_capture(vlm, cfg.key_layer)) if key_head is not None else None
        att = stack.enter_context(attention_capture(vlm, cfg.match_layer)) if cfg.match_loss else None
        heads = stack.enter_context(head_output_capture(vlm, cfg.match_layer)) if cfg.copy_loss else None
        stream = stack.enter_context(prefetched_episodes(cfg))
        bar = tqdm(range(cfg.steps), desc="episodes", disable=not progress, mininterval=5)
        for step, episodes in zip(bar, stream):
            batch = training_batch(vlm, episodes)
            loss = vlm.loss(batch)
            if key_head is not None:
                key = key_head(res["h"], batch, episodes)
                if key is not None:
                    key_ema = key.item() if key_ema is None else 0.98 * key_ema + 0.02 * key.item()
                    loss = loss + cfg.key_loss * key
            if att is not None:
                match = match_loss(att["p"], cfg.match_head, batch, episodes)
                if match is not None:
                    match_ema = match.item() if match_ema is None else 0.98 * match_ema + 0.02 * match.item()
                    loss = loss + cfg.match_loss * match
            if heads is not None:
                cp = copy_loss(vlm, heads["z"], cfg.match_layer, cfg.match_head, batch, episodes)
                if cp is not None:
                    copy_ema = cp.item() if copy_ema is None else 0.98 * copy_ema + 0.02 * cp.item()
                    loss = loss + cfg.copy_loss * cp
            if cell_head is not None:
                cells, cell_acc = cell_step(vlm, cell_head, cfg.seed, "episodes", step, cfg.cell_batch)
                cell_ema = cell_acc if cell_ema is None else 0.98 * cell_ema + 0.02 * cell_acc
                loss = loss + cfg.cell_loss * cells
            for g in opt.param_groups:
                g["lr"] = cfg.lr * g["scale"] * lr_at(step, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            clip_or_diverge([p for g in groups for p in g["params"]], cfg.clip, loss, step)
            opt.step()
            ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
            bar.set_postfix(loss=f"{ema:.3f}")
            last = step + 1 == (cfg.stop_at or cfg.steps)
            if (cfg.eval_every and (step + 1) % cfg.eval_every == 0) or last:
                model.eval()
                probe = quick_eval(vlm, cfg.eval_episodes, cfg.seed) if cfg.eval_episodes else {}
                model.train()
                model.vision_model.eval()
                entry = {"stage": "episodes", "step": step + 1, "loss": round(ema, 4),
                         **({"key_loss": round(key_ema, 4)} if key_ema is not None else {}),
                         **({"match_loss": round(match_ema, 4)} if match_ema is not None else {}),
                         **({"copy_loss": round(copy_ema, 4)} if copy_ema is not None else {}),
                         **({"cell_acc": round(cell_ema, 3)} if cell_ema is not None else {}),
                         "minutes": round((time.time() - t0) / 60, 2), **probe}
                log.append(entry)
                print(json.dumps(entry), flush=True)
                if out is not None:
                    vlm.save(out, metadata={"pretrain": asdict(cfg), "steps_done": step + 1})
            if last:
                break
    model.eval()

