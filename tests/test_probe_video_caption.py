"""scripts/probe_video_caption.py: how a predicted video caption's events are counted, on hand-made cases."""
from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))  # the probe imports its sibling clip_caption_errors
spec = importlib.util.spec_from_file_location("probe_video_caption", SCRIPTS / "probe_video_caption.py")
pvc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pvc)

REFS = ["the red circle moves left and the blue cross appears", "the small circle moves left and the large cross appears"]
DEMOS = ["the green square shrinks", "the yellow triangle turns red"]


def test_events_drop_articles_and_split_on_and():
    assert pvc.events(REFS[0]) == ["red circle moves left", "blue cross appears"]


def test_each_event_is_counted_once_by_kind():
    assert pvc.classify(REFS[0], REFS, DEMOS) == Counter(right=2)
    assert pvc.classify(REFS[1], REFS, DEMOS) == Counter(right=2)  # the other naming convention is right too
    # one right event, one copied from a demonstration
    assert pvc.classify("the small circle moves left and the green square shrinks", REFS, DEMOS) == \
        Counter({"right": 1, "from a demo": 1})
    # a query actor doing the wrong thing, and an actor that is not in the query
    assert pvc.classify("the red circle turns red and the purple star grows", REFS, DEMOS) == \
        Counter({"other": 2, "right actor, wrong action": 1, "wrong actor": 1})


def test_hub_swap_takes_one_part_from_the_other_hub(vlm):
    """hub_swap against plain re-computations: with ``query_hub`` the demos' features are MMICT's and the query's
    are the other hub's own projected query tokens; with ``demo_hub`` the reverse."""
    import torch

    from mmict_core.data import make_episode
    from mmict_core.methods import create_method
    from mmict_core.methods.mmict import demo_text, run_mhub

    torch.manual_seed(0)
    mm = create_method("mmict", vlm, shots=2, train_shots=2)
    ft = create_method("vanilla-ft", vlm)
    with torch.no_grad():  # two different trained hubs
        for p in mm.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for p in ft.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ep = make_episode("binding", 2, seed=0, index=0, split="test")

    def own(method, item, text, part):  # (L or Q, d_lm): the method's hub run on one item, projected
        with torch.no_grad(), method.attached():
            run = run_mhub(vlm, [item.images], [text])[0]
            return method.language_projection(run.text_slice() if part == "text" else run.query_slice())

    with torch.no_grad():
        q_swap = pvc.hub_swap(mm, query_hub=ft)
        with q_swap.attached():
            (demos, query), = q_swap.hub_features([ep])
        d_swap = pvc.hub_swap(mm, demo_hub=ft)
        with d_swap.attached():
            (demos2, query2), = d_swap.hub_features([ep])
    for d, f, f2 in zip(ep.demos, demos, demos2):
        assert torch.allclose(f, own(mm, d, demo_text(d), "text"), atol=1e-5)
        assert torch.allclose(f2, own(ft, d, demo_text(d), "text"), atol=1e-5)
    assert torch.allclose(query, own(ft, ep.query, ep.query.prompt, "query"), atol=1e-5)
    assert torch.allclose(query2, own(mm, ep.query, ep.query.prompt, "query"), atol=1e-5)
    assert not torch.allclose(query, query2, atol=1e-3)  # the two hubs do differ
    outs = q_swap.generate([ep], max_new_tokens=2)  # and it runs end to end
    assert len(outs) == 1 and isinstance(outs[0], str)
