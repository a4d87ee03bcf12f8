"""The app's labels: method and task descriptions from the registry, per-method fields, numbering
from 1 everywhere, the Train button disabled while its run is queued or running, and a notice when
switching backbone drops adapters."""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from app.handlers import Studio  # noqa: E402
from mmict_core.data import get_task  # noqa: E402
from mmict_core.methods import get_method  # noqa: E402
from mmict_core.workbench import GALLERY_TASKS, rank_field, trainable_methods  # noqa: E402


class Req:
    def __init__(self, h):
        self.session_hash = h


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    return Studio(workdir=tmp_path_factory.mktemp("labels"), pool_size=6)


def test_method_and_task_descriptions_come_from_the_registry(studio):
    for m in trainable_methods():
        text, rank = studio.method_info(m)
        assert text == f"*{get_method(m).summary}*" and get_method(m).summary
        assert rank.visible == (rank_field(m) is not None)  # the Rank field only where the method has one
    assert studio.method_info("lora")[1].visible and not studio.method_info("mimic")[1].visible
    for t in GALLERY_TASKS:
        assert studio.task_info(t) == f"*{get_task(t).description}*"


def test_pool_numbers_count_from_one(studio):
    r = Req("numbers")
    gal, summary, *_ = studio.refresh(r)
    assert [cap.split("#")[1].split()[0] for _, cap in gal] == [str(i + 1) for i in range(len(gal))]
    s = studio.session(r)
    studio.query_from_gallery(1, r)  # "Pool # 1" is the first gallery item
    assert s.query.prompt == s.items[0].prompt and np.array_equal(s.query.images[0], s.items[0].images[0])
    with pytest.raises(gr.Error, match="Pool # counts from 1"):
        studio.query_from_gallery(0, r)
    s.selected = [4]
    assert "1. #5 " in studio.refresh(r)[1]  # demo position 1 is gallery item #5


def test_train_button_disabled_until_the_run_ends(studio):
    r = Req("button")
    status, button = studio.request_training(r)
    assert status.startswith("queued") and button.interactive is False
    assert studio.training_done().interactive is True


def test_switching_backbone_says_which_adapters_it_drops(studio, tmp_path, monkeypatch):
    from mmict_core.backbones import TeachingVLM

    r = Req("switch")
    list(studio.train("lora", "binding", 4, 1, 5e-3, 2, 0, request=r, progress=lambda *a, **k: None))
    other = tmp_path / "other"
    TeachingVLM.create(seed=1).save(other)
    seen = []
    monkeypatch.setattr(gr, "Warning", lambda m, *a, **k: seen.append(m))
    studio.load_backbone(str(other), "none", r)
    assert seen == ["switching backbone removed 1 adapter(s) from Compare (lora-binding-1s): they belong to the "
                    "previous backbone"]
    assert studio.session(r).adapters == {}
