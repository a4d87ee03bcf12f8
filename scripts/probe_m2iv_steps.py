"""Diagnosis of the M2IV claim on fixed binding (does not hold at 2,000 steps: 0.941 vs 8-shot ICL 1.000):
seed 0 trained 6,000 steps, the same 300 episodes.  python scripts/probe_m2iv_steps.py"""
# Diagnosis only: does M2IV close the gap to 8-shot ICL with more steps (seed 0, same 300 episodes)?
import json, time
from mmict_core.backbones import load_backbone
from mmict_core.casestudy import StarterEntry, starter_train_config
from mmict_core.data import get_task
from mmict_core.evaluate.icl import evaluate_generation
from mmict_core.methods import create_method
from mmict_core.train import train
bb = load_backbone("teaching")
task = get_task("binding", fixed_binding=True)
for steps in (6000,):
    m = create_method("m2iv", bb, seed=0)
    tc = starter_train_config(StarterEntry("binding", "m2iv", fixed_binding=True), 0)
    tc.steps = steps
    t0 = time.time()
    tr = train(m, tc, progress=False)
    r = evaluate_generation(m.generate, task, [0], episodes=300, seed=0, progress=False)[0]
    print(json.dumps({"steps": steps, "accuracy": r.accuracy, "loss_last100": sum(tr.losses[-100:]) / 100,
                      "loss_at_2000": sum(tr.losses[1900:2000]) / 100, "seconds": round(time.time() - t0)}), flush=True)
