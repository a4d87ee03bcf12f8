"""scripts/ablate_mmict_query_hub.py at 2 steps: the trained variant's query features are the frozen VanillaFT
hub's own (recomputed by hand), that hub did not move while MMICT's did, and the script writes its record."""
import json
import sys

import torch
from conftest import load_script


def test_two_steps_train_the_demo_hub_only(tmp_path, monkeypatch):
    abl = load_script("ablate_mmict_query_hub")
    from mmict_core.backbones import load_backbone
    from mmict_core.casestudy import method_for
    from mmict_core.data import make_episode
    from mmict_core.methods.mmict import run_mhub

    bb = load_backbone("teaching")
    ft = method_for(bb, "vanilla-ft", abl.TASK)
    for p in ft.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in ft.state_dict().items()}
    rec, m = abl.run_seed(bb, ft, 1, episodes=3, probe_episodes=2, steps=2)
    assert all(torch.equal(before[k], v) for k, v in ft.state_dict().items())  # the query hub stayed frozen
    base = bb.model.qformer.state_dict()  # MMICT's own hub moved away from the base weights
    assert any(not torch.equal(base[k], v) for k, v in m.qformer.state_dict().items())
    ep = make_episode(abl.TASK, 2, seed=0, index=0, split="test")
    with torch.no_grad():
        with m.attached():
            (_, query), = m.hub_features([ep])
        with ft.attached():
            ref = ft.language_projection(run_mhub(bb, [ep.query.images], [ep.query.prompt])[0].query_slice())
    assert torch.allclose(query, ref, atol=1e-5)
    assert rec["seed"] == 1 and rec["episodes"] == 3 and "--steps 2 " in rec["command"] and "--seed 1" in rec["command"]
    assert rec["wilson95"][0] <= rec["accuracy"] <= rec["wilson95"][1]
    assert abs(rec["events"]["right"] + rec["events"]["from a demo"] + rec["events"]["other"] - 1.0) < 0.01
    # the command line: resumable (an existing seed is skipped)
    (tmp_path / "seed1.json").write_text(json.dumps(rec))
    monkeypatch.setattr(sys, "argv", ["x", "--seeds", "1", "--out", str(tmp_path)])
    abl.main()
    assert json.loads((tmp_path / "seed1.json").read_text()) == rec
