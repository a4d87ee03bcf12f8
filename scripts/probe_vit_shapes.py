"""How well a teaching VLM's ViT separates ShapesWorld shapes, small and large (the README's probe).

For each occupied cell of 3,000 fresh scenes (seed 1234), the patch states of that cell's quarter of
the grid are concatenated and a logistic-regression read-out of the shape is fitted on the first
2,000 scenes' cells and scored on the last 1,000's:

    .venv/bin/python scripts/probe_vit_shapes.py assets/teaching-vlm [runs/OTHER ...]
"""
from __future__ import annotations

import json
import sys

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from mmict_core.backbones import TeachingVLM
from mmict_core.data import shapes as sw


def cell_features(vlm: TeachingVLM, rng: np.random.Generator, n_scenes: int):
    g = vlm.image_size // vlm.model.vision_model.config.patch_size  # patches per side
    h = g // 2  # patches per cell side
    X, y, size = [], [], []
    for _ in range(n_scenes):
        scene = sw.sample_scene(rng)
        with torch.no_grad():
            grid = vlm.vision_states([scene.render()])[0, 1:].reshape(g, g, -1)  # (g, g, d), CLS dropped
        for k, cell in enumerate(sw.CELLS):
            obj = scene.in_cell(cell)
            if obj is not None:
                r, c = divmod(k, 2)  # CELLS order: top left, top right, bottom left, bottom right
                X.append(grid[r * h:(r + 1) * h, c * h:(c + 1) * h].reshape(-1).numpy())
                y.append(sw.SHAPES.index(obj.shape))
                size.append(obj.size)
    return np.array(X), np.array(y), np.array(size)


def probe(folder: str, seed: int = 1234) -> dict:
    vlm = TeachingVLM.load(folder)
    rng = np.random.default_rng(seed)
    Xa, ya, _ = cell_features(vlm, rng, 2000)
    Xb, yb, sb = cell_features(vlm, rng, 1000)
    pred = LogisticRegression(max_iter=2000).fit(Xa, ya).predict(Xb)
    out = {"folder": folder, "cells": len(yb), "all": round(float((pred == yb).mean()), 3)}
    for s in sw.SIZES:
        out[s] = round(float((pred[sb == s] == yb[sb == s]).mean()), 3)
    return out


if __name__ == "__main__":
    for f in sys.argv[1:] or ["assets/teaching-vlm"]:
        print(json.dumps(probe(f)), flush=True)
