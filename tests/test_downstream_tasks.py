"""The downstream case-study tasks (ft-vqa, ft-caption, ft-video-qa, ft-video-caption): answers
re-derived from the scene description / the clip's pixels, the naming convention shared by an
episode's demonstrations and query (the information the query alone lacks), the convention-blind
alternative, and that the pretraining never sees them."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from mmict_core.data import get_task, make_episode, vocabulary
from mmict_core.data.tasks import DOWNSTREAM_TASKS, NAMINGS, PRETRAINING_TASKS, TASKS
from test_clips import events_from_pixels

CELLS = ["top left", "top right", "bottom left", "bottom right"]


def scene_objects(description: str) -> list[dict]:
    """'large red circle top left and small blue cross bottom right' -> objects (independent parse)."""
    out = []
    for part in description.split(" and "):
        w = part.split()
        out.append({"size": w[0], "colour": w[1], "shape": w[2], "cell": " ".join(w[3:])})
    return out


def name(obj: dict, naming: str) -> str:
    return f"{obj['colour'] if naming == 'colour' else obj['size']} {obj['shape']}"


def test_registered_and_kept_out_of_pretraining():
    assert set(DOWNSTREAM_TASKS) <= set(TASKS) and not set(DOWNSTREAM_TASKS) & set(PRETRAINING_TASKS)
    cases = {get_task(t).case for t in DOWNSTREAM_TASKS}
    assert cases == {"vqa", "caption", "video-qa", "video-caption"}  # the MMICT paper's four case-study types
    vocab = set(vocabulary())
    for t in DOWNSTREAM_TASKS:  # every word of every prompt and answer is in the teaching tokenizer's vocabulary
        ep = make_episode(t, 3, seed=0, index=0, pool_size=4)
        for ex in list(ep.demos) + [ep.query]:
            assert set(ex.prompt.split()) <= vocab and set(ex.answer.split()) <= vocab


@pytest.mark.parametrize("task", DOWNSTREAM_TASKS)
def test_one_naming_convention_per_episode_shown_by_the_demos(task):
    namings = Counter()
    for i in range(40):
        ep = make_episode(task, 4, seed=1, index=i, pool_size=4)
        nm = ep.info["naming"]
        namings[nm] += 1
        for ex in list(ep.demos) + [ep.query]:
            assert ex.meta["naming"] == nm
            assert ex.meta["alternative"] != ex.answer or ex.answer == ""
    assert set(namings) == set(NAMINGS) and min(namings.values()) >= 10  # both conventions, about equally


def test_ft_vqa_names_the_object_in_the_asked_cell():
    task = get_task("ft-vqa")
    rng = np.random.default_rng(0)
    for _ in range(200):
        nm = NAMINGS[int(rng.integers(2))]
        ex = task.item(rng, nm)
        cell = ex.prompt[len("what is in the "):-2]
        (obj,) = [o for o in scene_objects(ex.meta["scene"]) if o["cell"] == cell]
        assert ex.answer == name(obj, nm) and ex.meta["alternative"] == name(obj, NAMINGS[1 - NAMINGS.index(nm)])


def test_ft_caption_lists_every_object_in_cell_order():
    task = get_task("ft-caption")
    rng = np.random.default_rng(1)
    for _ in range(200):
        nm = NAMINGS[int(rng.integers(2))]
        ex = task.item(rng, nm)
        objs = sorted(scene_objects(ex.meta["scene"]), key=lambda o: CELLS.index(o["cell"]))
        assert ex.answer == " and ".join(name(o, nm) for o in objs)


@pytest.mark.parametrize("task", ["ft-video-qa", "ft-video-caption"])
def test_video_downstream_answers_follow_from_the_pixels(task):
    t = get_task(task)
    rng = np.random.default_rng(2)
    for _ in range(150):
        nm = NAMINGS[int(rng.integers(2))]
        ex = t.item(rng, nm)
        ev = events_from_pixels(ex.images)  # (size, colour, shape, does)
        names = {f"{(c if nm == 'colour' else s)} {sh}": does for s, c, sh, does in ev}
        if task == "ft-video-qa":
            assert len(ev) == 1 and ex.answer in names
        else:
            parts = [p[len("the "):] for p in ex.answer.split(" and ")]
            got = {" ".join(p.split()[:2]): " ".join(p.split()[2:]) for p in parts}
            assert len(got) == len(parts) == len(ev), ex.answer  # no name stands for two objects
            assert got == names


def test_chance_and_the_naming_blind_ceiling():
    for t in DOWNSTREAM_TASKS:
        task = get_task(t)
        assert task.naming_blind == 0.5 and 0 < task.chance < 0.1
        assert task.extra_metrics[0] == "content"
