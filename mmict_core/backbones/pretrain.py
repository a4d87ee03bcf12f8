"""`mmict pretrain-teaching`: reproduce the shipped teaching VLM from a seed.

Stage 1 (vision): the ViT learns ShapesWorld attributes per grid cell and digit identities from
supervised heads on its patch states (a short separate stage; fixed-knowledge VQA learns far
faster with it).  Stage 2 (episodes): the whole VLM learns from interleaved episodes of 0-8
demonstrations mixing every task, next-token loss on every answer (a demo's answer at position j
is a j-shot prediction), so in-context learning is learned, not built in.  Optional auxiliary
losses on binding episodes (``key_loss``, ``match_loss``; the shipped checkpoint's last two
continuations use them) show the LM where an induction-style copy must look: the colour at each
answer position, and one head's attention on the earlier answers of the same colour.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import digits as dg
from ..data import make_episode, shapes as sw
from ..data import vocabulary
from ..data.tasks import NONSENSE_WORDS, Binding, episode_rng
from .teaching import TeachingVLM
from .tokenizer import ANSWER

DEFAULT_MIX = {"shapes-vqa": 0.18, "shapes-caption": 0.07, "digits": 0.12, "binding": 0.32, "operator": 0.15, "format": 0.16}


@dataclass
class PretrainConfig:
    seed: int = 0
    vision_steps: int | None = None  # stage 1 steps (None: 800 from scratch, 0 when continuing)
    vision_batch: int = 64
    vision_lr: float = 2e-3
    vision_layers: int | None = None  # grow the ViT to this many layers before the stages (None: keep)
    vision_intermediate: int | None = None  # grow the ViT's MLP width to this (None: keep); see grow_vision
    steps: int = 4000  # stage 2 steps
    batch: int = 16
    lr: float = 1.5e-3
    vision_lr_scale: float = 0.3  # stage-2 lr of the vision encoder, relative
    warmup: int = 200
    min_lr_ratio: float = 0.05
    max_shots: int = 8
    clip: float = 1.0
    weight_decay: float = 0.01
    mix: dict = field(default_factory=lambda: dict(DEFAULT_MIX))
    eval_every: int = 1000
    eval_episodes: int = 32
    init_from: str | None = None  # continue from a saved teaching VLM (skips stage 1) instead of a fresh one
    binding_ways: tuple = (2, 2)  # n_way of training binding episodes, drawn uniformly in [lo, hi]
    stop_at: int | None = None  # stop after this many steps of the `steps`-long schedule (None: run it all)
    answer_marker: bool | None = None  # False: answers right after the image tokens (None: as the init has it)
    image_norm: float | None = None  # rescale the projection so image tokens have this mean norm (None: keep)
    induction_steps: int = 0  # stage 1b: text-only associative recall for the LM (0: none)
    induction_lr: float = 5e-4  # its peak lr (1.5e-3 leaves the 4-layer LM on the copy-any-word plateau)
    induction_batch: int = 32
    key_loss: float = 0.0  # weight of the auxiliary binding-key loss (0: none); see colour_key_targets
    key_layer: int = 2  # LM layer whose output the key loss reads (1..num_layers-1)
    match_loss: float = 0.0  # weight of the binding-match attention loss (0: none); see binding_match_targets
    match_layer: int = 2  # decoder layer (0-based) whose head `match_head` the match loss supervises
    match_head: int = 0

    def __post_init__(self) -> None:
        if self.vision_steps is None:
            self.vision_steps = 800 if self.init_from is None else 0
        for name in ("vision_layers", "vision_intermediate"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (or None to keep the ViT's), got {getattr(self, name)}")
        if self.steps < 0 or self.vision_steps < 0 or self.induction_steps < 0 or self.batch < 1:
            raise ValueError("steps, vision_steps and induction_steps must be >= 0 and batch >= 1")
        if self.match_loss < 0 or self.match_layer < 0 or self.match_head < 0:
            raise ValueError(f"match_loss, match_layer and match_head must be >= 0, got "
                             f"{self.match_loss} / {self.match_layer} / {self.match_head}")
        if self.key_loss < 0 or self.key_layer < 1:
            raise ValueError(f"key_loss must be >= 0 and key_layer >= 1, got {self.key_loss} / {self.key_layer}")
        if self.vision_lr_scale < 0:
            raise ValueError(f"vision_lr_scale must be >= 0 (0 freezes the vision encoder), got {self.vision_lr_scale}")
        if self.image_norm is not None and not self.image_norm > 0:
            raise ValueError(f"image_norm must be > 0, got {self.image_norm}")
        if self.stop_at is not None and not 1 <= self.stop_at <= self.steps:
            raise ValueError(f"stop_at must be between 1 and steps ({self.steps}), got {self.stop_at}")
        if abs(sum(self.mix.values()) - 1.0) > 1e-6:
            raise ValueError(f"task mix weights must sum to 1, got {sum(self.mix.values())}")
        unknown = set(self.mix) - set(DEFAULT_MIX) - {"binding-cued"}
        if unknown:
            raise ValueError(f"unknown tasks in the mix: {sorted(unknown)}; known: {sorted(DEFAULT_MIX)}")
        self.binding_ways = tuple(int(x) for x in self.binding_ways)
        lo, hi = self.binding_ways
        if not 2 <= lo <= hi <= 6:
            raise ValueError(f"binding_ways must satisfy 2 <= lo <= hi <= 6 (six colours), got {self.binding_ways}")


# ---------------------------------------------------------------------------------------------
# stage 1: vision


def _vision_batch(rng: np.random.Generator, n: int):
    """Half ShapesWorld scenes, half digit pairs, with per-cell and per-digit labels."""
    images, cell_lab, digit_lab, count_lab = [], [], [], []
    for i in range(n):
        if i % 2 == 0:
            scene = sw.sample_scene(rng)
            images.append(scene.render())
            lab = []
            for cell in sw.CELLS:
                o = scene.in_cell(cell)
                lab.append([0, 0, 0] if o is None else [1 + sw.SHAPES.index(o.shape), 1 + list(sw.COLOURS).index(o.colour),
                                                        1 + list(sw.SIZES).index(o.size)])
            cell_lab.append(lab)
            digit_lab.append([10, 10])
            count_lab.append(len(scene.objects))
        else:
            (li, a), (ri, b) = dg.sample_digit(rng, "train"), dg.sample_digit(rng, "train")
            images.append(dg.render_pair(li, ri))
            cell_lab.append([[0, 0, 0]] * 4)
            digit_lab.append([a, b])
            count_lab.append(0)
    return images, torch.tensor(cell_lab), torch.tensor(digit_lab), torch.tensor(count_lab)


class VisionHeads(nn.Module):
    """Throw-away supervised heads over the ViT's patch grid (not part of the saved model)."""

    def __init__(self, d: int, grid: int):
        super().__init__()
        self.grid = grid
        self.shape = nn.Linear(d, 1 + len(sw.SHAPES))
        self.colour = nn.Linear(d, 1 + len(sw.COLOURS))
        self.size = nn.Linear(d, 1 + len(sw.SIZES))
        self.digit = nn.Linear(d, 11)
        self.count = nn.Linear(d, 5)

    def forward(self, states: torch.Tensor):
        B, _, d = states.shape
        g, h = self.grid, self.grid // 2
        patches = states[:, 1:].reshape(B, g, g, d)  # (B, rows, cols, d)
        cells = torch.stack([patches[:, r * h:(r + 1) * h, c * h:(c + 1) * h].mean((1, 2))
                             for r in range(2) for c in range(2)], 1)  # (B, 4, d) in CELLS order
        mid = patches[:, g // 4: 3 * g // 4]  # digit rows
        halves = torch.stack([mid[:, :, :h].mean((1, 2)), mid[:, :, h:].mean((1, 2))], 1)  # (B, 2, d)
        return self.shape(cells), self.colour(cells), self.size(cells), self.digit(halves), self.count(states[:, 0])


def grow_vision(vlm: TeachingVLM, layers: int | None = None, intermediate: int | None = None, seed: int = 0) -> None:
    """Deepen / widen the ViT without changing what it computes: each MLP gets extra hidden units
    whose ``fc2`` columns are zero, and each new layer (appended on top) has a zero ``projection``
    and ``fc2``, so it adds nothing to the residual stream until trained.  The config follows, so
    the grown model saves and loads like any other."""
    vm = vlm.model.vision_model
    cfg = vm.config
    layers = cfg.num_hidden_layers if layers is None else int(layers)
    intermediate = cfg.intermediate_size if intermediate is None else int(intermediate)
    if layers < cfg.num_hidden_layers or intermediate < cfg.intermediate_size:
        raise ValueError(f"grow_vision only grows: the ViT has {cfg.num_hidden_layers} layers of MLP width "
                         f"{cfg.intermediate_size}, asked for {layers} / {intermediate}")
    from transformers.models.instructblip.modeling_instructblip import InstructBlipEncoderLayer

    gen = torch.Generator().manual_seed(seed)
    d, old = cfg.hidden_size, cfg.intermediate_size
    with torch.no_grad():
        for layer in vm.encoder.layers:
            fc1, fc2 = layer.mlp.fc1, layer.mlp.fc2
            new1, new2 = nn.Linear(d, intermediate).to(fc1.weight), nn.Linear(intermediate, d).to(fc2.weight)
            new1.weight[:old], new1.bias[:old] = fc1.weight, fc1.bias
            new1.weight[old:] = torch.randn(intermediate - old, d, generator=gen) * cfg.initializer_range
            new1.bias[old:] = 0.0
            new2.weight.zero_()
            new2.weight[:, :old], new2.bias[:] = fc2.weight, fc2.bias  # new units: zero output columns
            layer.mlp.fc1, layer.mlp.fc2 = new1, new2
        cfg.intermediate_size = intermediate
        for _ in range(layers - cfg.num_hidden_layers):
            layer = InstructBlipEncoderLayer(cfg).to(vm.embeddings.patch_embedding.weight)
            for lin in (layer.self_attn.qkv, layer.mlp.fc1):
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * cfg.initializer_range)
            for lin in (layer.self_attn.projection, layer.mlp.fc2):  # identity on the residual at first
                lin.weight.zero_()
                lin.bias.zero_()
            vm.encoder.layers.append(layer)
        cfg.num_hidden_layers = layers  # cfg is the model's own vision_config: it saves with the new sizes


def pretrain_vision(vlm: TeachingVLM, cfg: PretrainConfig, log: list) -> None:
    vm = vlm.model.vision_model
    grid = vlm.image_size // vm.config.patch_size
    heads = VisionHeads(vm.config.hidden_size, grid)
    params = list(vm.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.vision_lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng([cfg.seed, 99])
    vm.train()
    ce = nn.functional.cross_entropy
    for step in tqdm(range(cfg.vision_steps), desc="stage 1: vision", mininterval=5):
        images, cl, dl, cnt = _vision_batch(rng, cfg.vision_batch)
        sh, co, si, di, cn = heads(vlm.vision_states(images))
        loss = (ce(sh.flatten(0, 1), cl[..., 0].flatten()) + ce(co.flatten(0, 1), cl[..., 1].flatten())
                + ce(si.flatten(0, 1), cl[..., 2].flatten()) + ce(di.flatten(0, 1), dl.flatten()) + ce(cn, cnt))
        lr = cfg.vision_lr * 0.5 * (1 + math.cos(math.pi * step / max(1, cfg.vision_steps)))
        for gp in opt.param_groups:
            gp["lr"] = lr
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, cfg.clip)
        opt.step()
        if step % 50 == 0 or step == cfg.vision_steps - 1:
            acc = {"shape": (sh.argmax(-1) == cl[..., 0]).float().mean().item(),
                   "colour": (co.argmax(-1) == cl[..., 1]).float().mean().item(),
                   "digit": (di.argmax(-1) == dl).float().mean().item(),
                   "count": (cn.argmax(-1) == cnt).float().mean().item()}
            log.append({"stage": "vision", "step": step, "loss": round(loss.item(), 4), **{k: round(v, 3) for k, v in acc.items()}})
            if step % 200 == 0 or step == cfg.vision_steps - 1:
                print(json.dumps(log[-1]), flush=True)
    vm.eval()


# ---------------------------------------------------------------------------------------------
# stage 1b: induction (text only)


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


def pretrain_induction(vlm: TeachingVLM, cfg: PretrainConfig, log: list) -> None:
    """Train the LM alone on :func:`induction_batch` so that induction heads (match an earlier key,
    copy what followed it) exist before the episodes ask for them with pixels as keys."""
    lm = vlm.language_model
    params = [p for p in lm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.induction_lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    rng = np.random.default_rng([cfg.seed, 77])
    lm.train()
    for step in tqdm(range(cfg.induction_steps), desc="stage 1b: induction", mininterval=5):
        ids, mask, labels = induction_batch(vlm, rng, cfg.induction_batch)
        logits = lm(input_ids=ids.to(vlm.device), attention_mask=mask.to(vlm.device)).logits  # (B, T, V)
        tgt = labels[:, 1:].to(vlm.device)
        loss = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), tgt.flatten(), ignore_index=-100)
        warm = min(1.0, (step + 1) / 100)
        for g in opt.param_groups:
            g["lr"] = cfg.induction_lr * warm
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, cfg.clip)
        opt.step()
        if step % 250 == 0 or step == cfg.induction_steps - 1:
            with torch.no_grad():
                hit = (logits[:, :-1].argmax(-1) == tgt) & (tgt != -100) & (tgt != vlm.eos_token_id)
                n_val = ((tgt != -100) & (tgt != vlm.eos_token_id)).sum().clamp(min=1)
            log.append({"stage": "induction", "step": step, "loss": round(loss.item(), 4),
                        "value_acc": round((hit.sum() / n_val).item(), 3)})
            if step % 1000 == 0 or step == cfg.induction_steps - 1:
                print(json.dumps(log[-1]), flush=True)


# ---------------------------------------------------------------------------------------------
# stage 2: episodes


def _lr_at(step: int, cfg: PretrainConfig) -> float:
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
        k = int(rng.integers(0, cfg.max_shots + 1))
        if task in ("binding", "binding-cued"):
            # more words per episode make "copy a shown word" fail more often than "match the colour";
            # 'binding-cued' names the colour in the prompt too (a word key: an easier curriculum step)
            task = Binding(n_way=int(rng.integers(cfg.binding_ways[0], cfg.binding_ways[1] + 1)),
                           cue_in_prompt=task == "binding-cued")
        eps.append(make_episode(task, k, seed=cfg.seed, index=step * cfg.batch + b, split="train", pool_size=max(k, 1)))
    return eps


def unpredictable_items(episode) -> set[int]:
    """Demo answers that nothing before them determines: the first demo of a format or operator
    episode (style / operator not shown yet) and each binding demo whose category has not appeared
    yet, and the binding query when no demo showed its category.  They get no loss: training on them teaches a prior guess (a random nonsense word, a
    format style at 0 shots) instead of reading the demonstrations."""
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


def colour_key_targets(batch, episodes) -> tuple[list[int], list[int], list[int]]:
    """Rows, positions and colour indices for the auxiliary key loss: in binding episodes, every
    item's answer-marker positions and the first position of its answer.

    An induction-style copy needs the demo's *answer* position to carry the colour of the image
    before it (the key the query is matched against) and the prediction position to carry the
    query's colour.  The colour is decodable from the image tokens but the 4-layer LM found no path
    to put it at the answer position from the next-token loss alone; this loss supervises just
    that half of the circuit (the nonsense word, the bound value, is never a target of it)."""
    colours = list(sw.COLOURS)
    rows, pos, lab = [], [], []
    for b, ep in enumerate(episodes):
        if ep.task != "binding":
            continue
        for i, ex in enumerate(list(ep.demos) + [ep.query]):
            if ex.label not in colours:
                continue
            at = batch.positions(b, "marker", i) + batch.positions(b, "answer", i)[:1]
            rows += [b] * len(at)
            pos += at
            lab += [colours.index(ex.label)] * len(at)
    return rows, pos, lab


def binding_match_targets(batch, episodes) -> list[tuple[int, int, list[int]]]:
    """``(row, query position, key positions)`` for the match loss: in binding episodes, for every
    predictable answer (its colour shown before, see :func:`unpredictable_items`), the position
    that predicts its first token (the last position before the answer) and the first answer
    positions of the earlier items of the same colour — where an induction head should look."""
    out = []
    for b, ep in enumerate(episodes):
        if ep.task != "binding":
            continue
        items = list(ep.demos) + [ep.query]
        skip = unpredictable_items(ep)
        for i, ex in enumerate(items):
            if i in skip:
                continue
            ans = batch.positions(b, "answer", i)
            keys = [batch.positions(b, "answer", j)[0] for j in range(i) if items[j].label == ex.label]
            if ans and keys:
                out.append((b, ans[0] - 1, keys))
    return out


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


def quick_eval(vlm: TeachingVLM, n: int, seed: int) -> dict:
    from ..evaluate.icl import evaluate_icl

    probes = {"shapes-vqa": [0], "binding": [0, 4, 8], "format": [0, 2], "operator": [4], "digits": [0]}
    out = {}
    for task, shots in probes.items():
        for r in evaluate_icl(vlm, task, shots, episodes=n, seed=seed, split="val", progress=False):
            out[f"{task}@{r.shots}"] = round(r.accuracy, 3)
    return out


def pretrain_teaching(out: str | Path, cfg: PretrainConfig | None = None, progress: bool = True) -> dict:
    """Train a teaching VLM from scratch and save it (with train_log.json) under ``out``."""
    cfg = cfg or PretrainConfig()
    out = Path(out)
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    vlm = TeachingVLM.create(seed=cfg.seed) if cfg.init_from is None else TeachingVLM.load(cfg.init_from)
    vlm.model.requires_grad_(True)
    if cfg.answer_marker is not None:
        vlm.answer_marker_ids = [vlm.tokenizer.token_to_id(ANSWER)] if cfg.answer_marker else []
    if cfg.image_norm is not None:
        rescale_image_tokens(vlm, cfg.image_norm, cfg.seed)
    if cfg.vision_layers is not None or cfg.vision_intermediate is not None:
        grow_vision(vlm, cfg.vision_layers, cfg.vision_intermediate, seed=cfg.seed)
    log: list = []
    if cfg.vision_steps:  # from scratch; on a continuation only when asked (e.g. after growing the ViT)
        pretrain_vision(vlm, cfg, log)
    t_vision = time.time() - t0
    if cfg.induction_steps:
        pretrain_induction(vlm, cfg, log)
    t_induction = time.time() - t0 - t_vision
    model = vlm.model
    vision_params = list(model.vision_model.parameters())
    vid = {id(p) for p in vision_params}
    decay = lambda p: p.ndim >= 2  # noqa: E731
    rest = [p for p in model.parameters() if id(p) not in vid]
    groups = [
        {"params": [p for p in rest if decay(p)], "weight_decay": cfg.weight_decay, "scale": 1.0},
        {"params": [p for p in rest if not decay(p)], "weight_decay": 0.0, "scale": 1.0},
        {"params": vision_params, "weight_decay": cfg.weight_decay, "scale": cfg.vision_lr_scale},
    ]
    captured: dict = {}  # what the auxiliary losses read, kept by forward hooks during each step
    restore = []
    key_head = None
    n_layers, n_heads = vlm.language_model.config.num_hidden_layers, vlm.language_model.config.num_attention_heads
    if cfg.key_loss and cfg.key_layer >= n_layers:
        raise ValueError(f"key_layer must be below the LM's {n_layers} layers, got {cfg.key_layer}")
    if cfg.match_loss and (cfg.match_layer >= n_layers or cfg.match_head >= n_heads):
        raise ValueError(f"match_layer / match_head must be below {n_layers} / {n_heads}, "
                         f"got {cfg.match_layer} / {cfg.match_head}")
    if cfg.key_loss:  # throw-away linear read-out of the colour (not part of the saved model)
        key_head = nn.Linear(vlm.language_model.config.hidden_size, len(sw.COLOURS)).to(vlm.device)
        groups.append({"params": list(key_head.parameters()), "weight_decay": 0.0, "scale": 1.0})
        hook = vlm.decoder_layers()[cfg.key_layer - 1].register_forward_hook(  # residual after layer key_layer
            lambda mod, args, out: captured.__setitem__("h", out[0] if isinstance(out, tuple) else out))
        restore.append(hook.remove)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98))
    if cfg.match_loss:  # eager attention returns its probabilities; a hook keeps the supervised layer's
        tc, old_impl = vlm.text_config, vlm.text_config._attn_implementation
        tc._attn_implementation = "eager"
        restore.append(lambda: setattr(tc, "_attn_implementation", old_impl))
        hook = vlm.attention(cfg.match_layer).register_forward_hook(
            lambda mod, args, out: captured.__setitem__("p", out[1]))  # (B, H, T, T)
        restore.append(hook.remove)
    model.train()
    model.vision_model.eval()  # no dropout/BN there, but keep eval semantics for the frozen-ish tower
    ema = key_ema = match_ema = None
    bar = tqdm(range(cfg.steps), desc="stage 2: episodes", disable=not progress, mininterval=5)
    try:
        for step in bar:
            episodes = training_episodes(cfg, step)
            batch = training_batch(vlm, episodes)
            loss = vlm.loss(batch)
            if key_head is not None:
                rows, pos, lab = colour_key_targets(batch, episodes)
                if rows:
                    h = captured["h"][rows, pos]  # (n, d) residual after layer key_layer
                    key = nn.functional.cross_entropy(key_head(h), torch.tensor(lab, device=h.device))
                    key_ema = key.item() if key_ema is None else 0.98 * key_ema + 0.02 * key.item()
                    loss = loss + cfg.key_loss * key
            if cfg.match_loss:
                targets = binding_match_targets(batch, episodes)
                if targets:
                    p = captured["p"][:, cfg.match_head]  # (B, T, T) probabilities of the supervised head
                    mass = torch.stack([p[b, q, keys].sum() for b, q, keys in targets])  # (n,) on same-colour answers
                    match = -torch.log(mass.clamp(min=1e-6)).mean()
                    match_ema = match.item() if match_ema is None else 0.98 * match_ema + 0.02 * match.item()
                    loss = loss + cfg.match_loss * match
            for g in opt.param_groups:
                g["lr"] = cfg.lr * g["scale"] * _lr_at(step, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.clip)
            opt.step()
            ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
            bar.set_postfix(loss=f"{ema:.3f}")
            done = step + 1
            last = done == (cfg.stop_at or cfg.steps)
            if (cfg.eval_every and (step + 1) % cfg.eval_every == 0) or last:
                model.eval()
                probe = quick_eval(vlm, cfg.eval_episodes, cfg.seed) if cfg.eval_episodes else {}
                model.train()
                entry = {"stage": "episodes", "step": step + 1, "loss": round(ema, 4),
                         **({"key_loss": round(key_ema, 4)} if key_ema is not None else {}),
                         **({"match_loss": round(match_ema, 4)} if match_ema is not None else {}), "minutes": round((time.time() - t0) / 60, 2), **probe}
                log.append(entry)
                print(json.dumps(entry), flush=True)
                vlm.save(out, metadata={"pretrain": asdict(cfg), "steps_done": done})
            captured.clear()
            if last:
                break
    finally:  # the attention implementation and the hook go back even if training fails
        for undo in restore:
            undo()
    model.eval()
    wall = time.time() - t0
    summary = {"config": asdict(cfg), "wall_seconds": round(wall, 1), "vision_seconds": round(t_vision, 1),
               "induction_seconds": round(t_induction, 1),
               "torch_threads": torch.get_num_threads(), "log": log}
    steps_done = min(cfg.stop_at or cfg.steps, cfg.steps)
    vlm.save(out, metadata={"pretrain": asdict(cfg), "steps_done": steps_done})
    (out / "train_log.json").write_text(json.dumps(summary, indent=1))
    return summary
