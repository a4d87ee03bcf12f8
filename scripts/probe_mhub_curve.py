"""The M-Hub premise probe (issue 17, item 3) as a function of the probe's own training data.

``mmict_core.teaching.hub.mhub_probe`` reads an object's colour and shape out of the mean Q-Former
text-token output of a binding demonstration with a logistic regression fitted on 2/3 of ``n`` fresh
scenes and scored on the other 1/3.  The recipe logs it at n = 900 (600 training scenes).  A linear
read-out (colour 6-way, shape 4-way) from a standardised 64-wide feature can be limited by its 600
training scenes rather than by the features; this prints the same probe (same seed, same split
rule) at several n, so the two can be told apart:

    .venv/bin/python scripts/probe_mhub_curve.py assets/teaching-vlm [runs/OTHER ...] \
        [--sizes 900,1800,3600,7200] [--seed 123] [--json out.jsonl]
"""
from __future__ import annotations

import argparse
import json

import torch

from mmict_core.backbones import load_backbone
from mmict_core.teaching.hub import mhub_probe


def curve(folder: str, sizes: list[int], seed: int) -> list[dict]:
    vlm = load_backbone(folder)
    return [{"model": folder, "scenes": n, "train_scenes": 2 * n // 3, "seed": seed, **mhub_probe(vlm, n=n, seed=seed)}
            for n in sizes]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="teaching-VLM folders")
    ap.add_argument("--sizes", default="900,1800,3600,7200", help="comma-separated scene counts n")
    ap.add_argument("--seed", type=int, default=123, help="scene seed (the recipe uses its seed + 123)")
    ap.add_argument("--json", default=None, help="append one JSON line per (model, n) here")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    sizes = [int(s) for s in a.sizes.split(",")]
    for folder in a.models:
        for row in curve(folder, sizes, a.seed):
            print(json.dumps(row), flush=True)
            if a.json:
                with open(a.json, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
