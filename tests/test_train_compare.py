"""The shared trainer (schedule, clipping, resume, cancel) and `compare` on a tiny random backbone."""
from __future__ import annotations

import json
import math

import pytest
import torch

from mmict_core.backbones import TeachingVLM
from mmict_core.evaluate.compare import MethodSpec, coerce_overrides, compare, parse_method_specs
from mmict_core.methods import get_method
from mmict_core.methods.hificl import HiFICLConfig
from mmict_core.train import TrainConfig, lr_factor, train, training_batch


@pytest.fixture(scope="module")
def vlm():
    return TeachingVLM.create(seed=0)


def test_lr_schedule_formula():
    total, warm = 100, 0.1
    assert lr_factor(0, total, warm, 0.0) == pytest.approx(1 / 10)
    assert lr_factor(9, total, warm, 0.0) == pytest.approx(1.0)
    # cosine from step 10 to 100, plain re-computation
    for s in (10, 40, 77, 99):
        p = (s - 10) / 90
        assert lr_factor(s, total, warm, 0.2) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * p)))


def test_train_config_validation():
    with pytest.raises(ValueError, match="unknown task"):
        TrainConfig(task="nope")
    with pytest.raises(ValueError, match="samples"):
        TrainConfig(samples=0)
    with pytest.raises(ValueError, match="loss_on"):
        TrainConfig(loss_on="everything")
    with pytest.raises(ValueError, match="mix_fixed"):
        TrainConfig(mix_fixed=1.5)


def test_samples_bound_the_distinct_queries(vlm):
    m = get_method("hificl")(vlm, HiFICLConfig())
    cfg = TrainConfig(task="binding", samples=3, batch_size=2, steps=10)
    prompts = set()
    for step in range(6):
        for ep in training_batch(m, cfg, step):
            prompts.add(ep.query.images[0].tobytes())
    assert len(prompts) == 3


def test_mix_fixed_draws_fixed_tasks(vlm):
    m = get_method("hificl")(vlm, HiFICLConfig())
    cfg = TrainConfig(task="binding", batch_size=50, steps=1, mix_fixed=0.5)
    tasks = [ep.task for ep in training_batch(m, cfg, 0)]
    assert 10 < sum(t != "binding" for t in tasks) < 40
    assert {t for t in tasks} - {"binding"} <= {"shapes-vqa", "shapes-caption", "digits"}


def test_resume_equals_uninterrupted_training(vlm, tmp_path):
    cfg = TrainConfig(task="binding", steps=4, batch_size=2, lr=1e-2)
    straight = get_method("hificl")(vlm, HiFICLConfig(seed=1))
    train(straight, cfg, progress=False)
    # two steps, "killed", then resumed for the rest
    first = get_method("hificl")(vlm, HiFICLConfig(seed=1))
    train(first, cfg, out_dir=tmp_path, progress=False, callback=lambda s, n, l, p: s < 2)
    resumed = get_method("hificl")(vlm, HiFICLConfig(seed=1))
    res = train(resumed, cfg, out_dir=tmp_path, resume=True, progress=False)
    assert res.resumed_from == 2 and res.steps == 4
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=1e-5, atol=1e-7)
    assert not list(tmp_path.rglob("*.pt")) and (tmp_path / "checkpoint" / "trainer.safetensors").is_file()
    log = json.loads((tmp_path / "train_log.json").read_text())
    assert log["steps"] == 4


def test_training_leaves_the_backbone_untouched(vlm):
    before = {k: v.clone() for k, v in vlm.model.state_dict().items()}
    m = get_method("hificl")(vlm, HiFICLConfig())
    res = train(m, TrainConfig(task="binding", steps=3, batch_size=2), progress=False)
    assert all(math.isfinite(x) for x in res.losses)
    assert all(torch.equal(before[k], v) for k, v in vlm.model.state_dict().items())
    assert all(p.grad is None for p in vlm.model.parameters())


def test_method_specs_and_overrides():
    specs = parse_method_specs("icl:8, hificl ,vanilla-ft")
    assert [(s.name, s.shots) for s in specs] == [("icl", 8), ("hificl", None), ("vanilla-ft", None)]
    with pytest.raises(ValueError, match="unknown method 'hifi'"):
        parse_method_specs("hifi")
    with pytest.raises(ValueError, match="shots must be a whole number"):
        parse_method_specs("icl:x")
    assert coerce_overrides(HiFICLConfig, ["rank=4", "z2=faithful"]) == {"rank": 4, "z2": "faithful"}
    (tv,) = parse_method_specs("task-vector:5@layer=2")  # config settings in a spec, typed by the config class
    assert (tv.name, tv.shots, tv.overrides, tv.label) == ("task-vector", 5, {"layer": 2}, "task-vector:5@layer=2")
    assert parse_method_specs("hificl@rank=4")[0].label == "hificl@rank=4"
    with pytest.raises(ValueError, match=r"in 'hificl@colour=red': bad setting"):
        parse_method_specs("hificl@colour=red")
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        coerce_overrides(HiFICLConfig, ["colour=red"])
    with pytest.raises(ValueError, match="rank takes a int"):
        coerce_overrides(HiFICLConfig, ["rank=big"])


def test_compare_rows_and_reuse(vlm, tmp_path):
    specs = [MethodSpec("icl", 2), MethodSpec("hificl", overrides={"rank": 2})]
    tcfg = TrainConfig(task="binding", steps=2, batch_size=2)
    rows = compare(vlm, "binding", specs, episodes=4, train_cfg=tcfg, cache_dir=tmp_path, progress=False)
    assert [r["method"] for r in rows] == ["icl:2", "hificl@rank=2"]  # a row names its config settings
    icl, hif = rows
    assert icl["shots"] == 2 and icl["trainable_params"] == 0 and icl["train_seconds"] == 0
    assert hif["shots"] == 0 and hif["trainable_params"] == get_method("hificl")(vlm, HiFICLConfig(rank=2)).expected_num_parameters()
    assert 0 <= hif["accuracy"] <= 1 and hif["infer_ms"] > 0 and not hif["reused"]
    again = compare(vlm, "binding", specs[1:], episodes=4, train_cfg=tcfg, cache_dir=tmp_path, progress=False)
    assert again[0]["reused"] and again[0]["accuracy"] == hif["accuracy"]


def test_compare_on_a_non_main_process_trains_but_neither_evaluates_nor_writes(vlm, tmp_path, monkeypatch):
    """Data-parallel `mmict compare`: every process trains (they share the batches); only the main one
    evaluates and writes the cache, so two processes never race for the same cache folder."""
    import mmict_core.evaluate.compare as cmp
    from mmict_core.parallel import World
    from mmict_core.train import TrainResult

    trained = []

    def fake_train(method, cfg, **kw):  # the collectives of a real 2-process run are tested elsewhere
        trained.append(method.name)
        return TrainResult(cfg.steps, 0.1, [1.0] * cfg.steps, [{}] * cfg.steps)

    def no_eval(*a, **kw):
        raise AssertionError("a non-main process evaluated")

    monkeypatch.setattr(cmp, "train", fake_train)
    monkeypatch.setattr(cmp, "evaluate_generation", no_eval)
    monkeypatch.setattr(cmp, "world", lambda: World(1, 2, 1))
    tcfg = TrainConfig(task="binding", steps=2, batch_size=2)
    rows = compare(vlm, "binding", [MethodSpec("hificl", overrides={"rank": 2})], episodes=2, train_cfg=tcfg,
                   cache_dir=tmp_path, progress=False)
    assert rows == [] and trained == ["hificl"] and list(tmp_path.iterdir()) == []
    monkeypatch.undo()  # the main process: real evaluation; with the fake training it writes the cache
    monkeypatch.setattr(cmp, "train", fake_train)
    monkeypatch.setattr(cmp, "world", lambda: World(0, 2, 0))
    rows = compare(vlm, "binding", [MethodSpec("hificl", overrides={"rank": 2})], episodes=2, train_cfg=tcfg,
                   cache_dir=tmp_path, progress=False)
    assert len(rows) == 1 and len(list(tmp_path.iterdir())) == 1
