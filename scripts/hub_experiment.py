"""Experiment: which M-Hub text-path stage makes a binding demo's text-token outputs carry its
image (the probe of mmict_core.teaching.hub.mhub_probe)?  Runs the recipe's vision stage once,
then hub-stage variants from that same model, and prints the probe after each."""
import copy
import json
import sys
import time

import torch

from mmict_core.teaching.config import PretrainConfig
from mmict_core.teaching.hub import hub_stage, mhub_probe
from mmict_core.teaching.recipe import build_model
from mmict_core.teaching.vision import vision_stage

torch.set_num_threads(1)
variants = json.loads(sys.argv[1])
cfg = PretrainConfig(seed=0)
vlm = build_model(cfg)
vision_stage(vlm, cfg, [], progress=False)
base = copy.deepcopy(vlm.model.state_dict())
print(json.dumps({"variant": "vision only", "probe": mhub_probe(vlm)}), flush=True)
for v in variants:
    vlm.model.load_state_dict(base)
    c = PretrainConfig(seed=0, **v)
    t = time.time()
    log = []
    hub_stage(vlm, c, log, progress=False)
    print(json.dumps({"variant": v, "minutes": round((time.time() - t) / 60, 1), "last": log[-1], "probe": mhub_probe(vlm)}), flush=True)
