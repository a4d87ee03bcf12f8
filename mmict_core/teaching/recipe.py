"""`mmict pretrain-teaching`: the teaching VLM from scratch, as a list of stages.

    vision    the ViT learns per-cell attributes, digits and counts (throw-away heads)
    hub       the Q-Former's text path learns ITG + ITM (BLIP-2 stage-1 style), ViT frozen
    induction (experimental, 0 steps in the recipe) text-only associative recall for the LM
    episodes  the whole VLM on interleaved 0-8-shot episodes of every pretraining task, images and
              clips, with the auxiliary binding key / match / copy losses

With ``cell_loss`` > 0 the hub and episode stages also train a per-cell read-out of the image
tokens (:mod:`.cells`).

Every stage takes the config's seed; `mmict pretrain-teaching --out DIR --seed S` runs them all
in one process (the defaults of :class:`PretrainConfig` are the shipped recipe).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..backbones.teaching import TeachingVLM
from ..backbones.tokenizer import ANSWER
from .cells import CellReadout
from .config import PretrainConfig
from .episodes import episode_stage
from .hub import hub_stage, mhub_probe
from .induction import induction_stage
from .vision import grow_vision, vision_stage

STAGES = ("vision", "hub", "induction", "episodes")
STEPS_FIELD = {"vision": "vision_steps", "hub": "hub_steps", "induction": "induction_steps", "episodes": "steps"}


def stage_plan(cfg: PretrainConfig) -> list[tuple[str, int]]:
    """The stages this config runs, in order, with their step counts (stages with 0 steps are skipped)."""
    plan = [(s, int(getattr(cfg, STEPS_FIELD[s]))) for s in STAGES]
    if cfg.stop_at is not None:
        plan = [(s, cfg.stop_at if s == "episodes" else n) for s, n in plan]
    return [(s, n) for s, n in plan if n > 0]


def build_model(cfg: PretrainConfig) -> TeachingVLM:
    """A fresh teaching VLM with the config's ViT sizes, or the ``init_from`` one grown to them."""
    if cfg.init_from is None:
        sizes = {k: v for k, v in (("vision_layers", cfg.vision_layers), ("vision_intermediate", cfg.vision_intermediate))
                 if v is not None}
        vlm = TeachingVLM.create(seed=cfg.seed, **sizes)
    else:
        vlm = TeachingVLM.load(cfg.init_from)
        if cfg.vision_layers is not None or cfg.vision_intermediate is not None:
            vc = vlm.model.config.vision_config
            grow_vision(vlm, max(cfg.vision_layers or 0, vc.num_hidden_layers),
                        max(cfg.vision_intermediate or 0, vc.intermediate_size), seed=cfg.seed)
    vlm.model.requires_grad_(True)
    if cfg.answer_marker is not None:
        vlm.answer_marker_ids = [vlm.tokenizer.token_to_id(ANSWER)] if cfg.answer_marker else []
    if cfg.image_norm is not None:
        from .episodes import rescale_image_tokens

        rescale_image_tokens(vlm, cfg.image_norm, cfg.seed)
    return vlm


def pretrain_teaching(out: str | Path, cfg: PretrainConfig | None = None, progress: bool = True) -> dict:
    """Run the recipe's stages and save the model (with train_log.json) under ``out``."""
    cfg = cfg or PretrainConfig()
    out = Path(out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t_all = time.time()
    vlm = build_model(cfg)
    log: list = []
    seconds: dict[str, float] = {}
    probes: dict[str, dict] = {}
    # the per-cell read-out head of the image tokens lives across the hub and episode stages
    cell_head = CellReadout(vlm.num_query_tokens, vlm.hidden_size).to(vlm.device) if cfg.cell_loss else None
    for stage, _ in stage_plan(cfg):
        t0 = time.time()
        if stage == "vision":
            vision_stage(vlm, cfg, log, progress)
        elif stage == "hub":
            probes["before_hub"] = mhub_probe(vlm, n=cfg.probe_scenes, seed=cfg.seed + 123)
            hub_stage(vlm, cfg, log, progress, cell_head=cell_head)
            probes["after_hub"] = mhub_probe(vlm, n=cfg.probe_scenes, seed=cfg.seed + 123)
            print(json.dumps({"mhub_probe": probes}), flush=True)
        elif stage == "induction":
            induction_stage(vlm, cfg, log, progress)
        else:
            episode_stage(vlm, cfg, log, out, progress, cell_head=cell_head)
        seconds[stage] = round(time.time() - t0, 1)
    vlm.model.eval()
    probes["final"] = mhub_probe(vlm, n=cfg.probe_scenes, seed=cfg.seed + 123)
    wall = time.time() - t_all
    summary = {"config": asdict(cfg), "stages": stage_plan(cfg), "wall_seconds": round(wall, 1),
               "stage_seconds": seconds, "torch_threads": torch.get_num_threads(), "mhub_probe": probes, "log": log}
    steps_done = min(cfg.stop_at or cfg.steps, cfg.steps)
    vlm.save(out, metadata={"pretrain": asdict(cfg), "steps_done": steps_done})
    (out / "train_log.json").write_text(json.dumps(summary, indent=1))
    return summary
