"""Probe of what the image tokens carry: where the teaching VLM loses the scene's cells.

Four linear read-outs (logistic regression, fresh ShapesWorld scenes of 1-4 objects, train/test split):
- patch_cell: which of the 4 cells a patch lies in, from that patch's own final ViT state (200 scenes x 64
             patches; chance 0.25): does the ViT keep where a patch is, so the Q-Former can attend by place?
- vit:       each cell's shape / colour / size (or empty) from the ViT's patch states pooled over the cell
             (what the vision stage trains);
- tokens:    the same from the flattened image tokens the LM receives (Q-Former query outputs after the
             language projection), encoded without an instruction;
- answer:    the answer of a ShapesWorld question (colour / shape / size / position) from the image tokens
             encoded WITH that question as the Q-Former instruction, as in a shapes-vqa episode, by question type
             (high only when the Q-Former itself selects the asked cell; a model whose tokens carry every cell
             and leaves the selection to the LM reads low here although it answers right).
Mean over the four cells for the first two.  One JSON line per model on stdout (and appended to --out).

    python scripts/probe_image_tokens.py assets/teaching-vlm runs/v3c-seed1 [--scenes 1500] [--out F]
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def _fit(X: np.ndarray, y: np.ndarray, cut: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(X[:cut])
    return LogisticRegression(max_iter=3000, C=0.5).fit(sc.transform(X[:cut]), y[:cut]).predict(sc.transform(X[cut:]))


def probe(path: str, n: int, seed: int) -> dict:
    from mmict_core.backbones import TeachingVLM
    from mmict_core.data import shapes as sw
    from mmict_core.data.tasks import vqa_question

    rng = np.random.default_rng(seed)
    scenes = [sw.sample_scene(rng) for _ in range(n)]
    qs = [vqa_question(rng, sc, ("colour", "shape", "size", "position")) for sc in scenes]
    vlm = TeachingVLM.load(path)
    vlm.model.eval()
    vit, tok, ans = [], [], []
    with torch.no_grad():
        for s in range(0, n, 250):
            imgs = [sc.render() for sc in scenes[s:s + 250]]
            st = vlm.vision_states(imgs)  # (b, 1 + g*g, d_v)
            b, T, d = st.shape
            g = int(round((T - 1) ** 0.5))
            h = g // 2
            p = st[:, 1:].reshape(b, g, g, d)
            vit.append(torch.stack([p[:, r * h:(r + 1) * h, c * h:(c + 1) * h].mean((1, 2))
                                    for r in range(2) for c in range(2)], 1).numpy())  # (b, 4, d_v)
            tok.append(vlm.encode_images(imgs).flatten(1).float().numpy())  # (b, Q*d)
            ans.append(vlm.encode_images(imgs, [q[0] for q in qs[s:s + 250]]).flatten(1).float().numpy())
    vit, tok, ans = np.concatenate(vit), np.concatenate(tok), np.concatenate(ans)
    cut = 2 * n // 3
    out = {"model": path, "scenes": n, "seed": seed}
    with torch.no_grad():
        st = vlm.vision_states([sc.render() for sc in scenes[:200]])[:, 1:]  # (200, g*g, d_v)
    g = int(round(st.shape[1] ** 0.5))
    cell = np.array([(r // (g // 2)) * 2 + c // (g // 2) for r in range(g) for c in range(g)])  # CELLS order
    X, y = st.reshape(-1, st.shape[-1]).float().numpy(), np.tile(cell, 200)
    out["patch_cell"] = round(float((_fit(X, y, 150 * g * g) == y[150 * g * g:]).mean()), 3)
    for attr in ("shape", "colour", "size"):
        accs_v, accs_t = [], []
        for ci, cell in enumerate(sw.CELLS):
            y = np.array([getattr(sc.in_cell(cell), attr) if sc.in_cell(cell) else "empty" for sc in scenes])
            accs_v.append(float((_fit(vit[:, ci], y, cut) == y[cut:]).mean()))
            accs_t.append(float((_fit(tok, y, cut) == y[cut:]).mean()))
        out[f"vit_{attr}"], out[f"tokens_{attr}"] = round(np.mean(accs_v), 3), round(np.mean(accs_t), 3)
    y, qt = np.array([q[1] for q in qs]), np.array([q[2] for q in qs])
    pred = _fit(ans, y, cut)
    for t in ("colour", "shape", "size", "position"):
        sel = qt[cut:] == t
        out[f"answer_{t}"] = round(float((pred[sel] == y[cut:][sel]).mean()), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--scenes", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="append the JSON lines to this file")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for m in a.models:
        line = json.dumps(probe(m, a.scenes, a.seed))
        print(line, flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
