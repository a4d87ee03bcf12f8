"""Stage: vision.  The ViT learns ShapesWorld attributes per grid cell, digit identities and the
object count from throw-away supervised heads on its patch states (fixed-knowledge VQA learns far
faster with it); and :func:`grow_vision`, which deepens / widens a trained ViT without changing
what it computes (for continuing a smaller model)."""
from __future__ import annotations

import json
import math

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..backbones.teaching import TeachingVLM
from ..data import digits as dg
from ..data import shapes as sw
from ..train import clip_or_diverge
from .config import PretrainConfig


def cell_labels(scene: sw.Scene) -> list[list[int]]:
    """Per cell (in ``sw.CELLS`` order): [shape, colour, size] indices, each 1-based, 0 for an empty cell."""
    lab = []
    for cell in sw.CELLS:
        o = scene.in_cell(cell)
        lab.append([0, 0, 0] if o is None else [1 + sw.SHAPES.index(o.shape), 1 + list(sw.COLOURS).index(o.colour),
                                                1 + list(sw.SIZES).index(o.size)])
    return lab


def _vision_batch(rng: np.random.Generator, n: int):
    """Half ShapesWorld scenes, half digit pairs, with per-cell and per-digit labels."""
    images, cell_lab, digit_lab, count_lab = [], [], [], []
    for i in range(n):
        if i % 2 == 0:
            scene = sw.sample_scene(rng)
            images.append(scene.render())
            cell_lab.append(cell_labels(scene))
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
        self.row = nn.Linear(d, grid)  # where a patch is (vision_position loss)
        self.col = nn.Linear(d, grid)

    def forward(self, states: torch.Tensor):
        B, _, d = states.shape
        g, h = self.grid, self.grid // 2
        patches = states[:, 1:].reshape(B, g, g, d)  # (B, rows, cols, d)
        cells = torch.stack([patches[:, r * h:(r + 1) * h, c * h:(c + 1) * h].mean((1, 2))
                             for r in range(2) for c in range(2)], 1)  # (B, 4, d) in CELLS order
        mid = patches[:, g // 4: 3 * g // 4]  # digit rows
        halves = torch.stack([mid[:, :, :h].mean((1, 2)), mid[:, :, h:].mean((1, 2))], 1)  # (B, 2, d)
        return self.shape(cells), self.colour(cells), self.size(cells), self.digit(halves), self.count(states[:, 0])

    def position(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Row and column logits of every patch from its own state: (B, g*g, g) each."""
        patches = states[:, 1:]  # (B, g*g, d), row-major
        return self.row(patches), self.col(patches)


def position_loss(heads: VisionHeads, states: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Cross-entropy of each patch's row and column read from its own state, and the accuracy.  Without
    it the cell-pooled heads let the ViT drop where a patch is (a per-patch read-out of its cell fell to
    0.39, chance 0.25; scripts/probe_image_tokens.py), and the Q-Former, whose cross-attention only sees the states, then cannot attend
    to "the shape in the top left"."""
    B, g = states.shape[0], heads.grid
    row, col = heads.position(states)
    idx = torch.arange(g * g, device=states.device)
    r, c = (idx // g).expand(B, -1), (idx % g).expand(B, -1)  # (B, g*g)
    ce = nn.functional.cross_entropy
    loss = ce(row.flatten(0, 1), r.flatten()) + ce(col.flatten(0, 1), c.flatten())
    acc = 0.5 * ((row.argmax(-1) == r).float().mean().item() + (col.argmax(-1) == c).float().mean().item())
    return loss, acc


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


def vision_stage(vlm: TeachingVLM, cfg: PretrainConfig, log: list, progress: bool = True) -> None:
    vm = vlm.model.vision_model
    grid = vlm.image_size // vm.config.patch_size
    heads = VisionHeads(vm.config.hidden_size, grid)
    params = list(vm.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.vision_lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng([cfg.seed, 99])
    vm.train()
    ce = nn.functional.cross_entropy
    for step in tqdm(range(cfg.vision_steps), desc="vision", mininterval=5, disable=not progress):
        images, cl, dl, cnt = _vision_batch(rng, cfg.vision_batch)
        states = vlm.vision_states(images)
        sh, co, si, di, cn = heads(states)
        loss = (ce(sh.flatten(0, 1), cl[..., 0].flatten()) + ce(co.flatten(0, 1), cl[..., 1].flatten())
                + ce(si.flatten(0, 1), cl[..., 2].flatten()) + ce(di.flatten(0, 1), dl.flatten()) + ce(cn, cnt))
        pos_acc = None
        if cfg.vision_position:
            pos, pos_acc = position_loss(heads, states)
            loss = loss + cfg.vision_position * pos
        lr = cfg.vision_lr * 0.5 * (1 + math.cos(math.pi * step / max(1, cfg.vision_steps)))
        for gp in opt.param_groups:
            gp["lr"] = lr
        opt.zero_grad()
        loss.backward()
        clip_or_diverge(params, cfg.clip, loss, step)
        opt.step()
        if step % 50 == 0 or step == cfg.vision_steps - 1:
            acc = {"shape": (sh.argmax(-1) == cl[..., 0]).float().mean().item(),
                   "colour": (co.argmax(-1) == cl[..., 1]).float().mean().item(),
                   "digit": (di.argmax(-1) == dl).float().mean().item(),
                   "count": (cn.argmax(-1) == cnt).float().mean().item(),
                   **({"position": pos_acc} if pos_acc is not None else {})}
            log.append({"stage": "vision", "step": step, "loss": round(loss.item(), 4), **{k: round(v, 3) for k, v in acc.items()}})
            if step % 200 == 0 or step == cfg.vision_steps - 1:
                print(json.dumps(log[-1]), flush=True)
    vm.eval()
