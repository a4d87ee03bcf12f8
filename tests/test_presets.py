"""Presets (configs/, mmict_core.presets, `mmict preset`): every preset parses and builds its whole
pipeline on a tiny config of its class with a fixture dataset (dry run); one tiny 4-bit run trains
and evaluates end to end; bad keys and values are clear errors; --set and the flags override;
data parallelism over two processes averages the gradients."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from mmict_core.cli import main
from mmict_core.presets import CONFIGS_DIR, PresetError, build_pipeline, load_preset, preset_names, run_preset
from mmict_core.presets.schema import apply_overrides

NAMES = preset_names()
PAPER = {  # a few of the papers' numbers, as methods.md gives them
    "hificl-idefics2-vqav2": ("hificl", 72.08), "hificl-llava-coco": ("hificl", 133.15),
    "mimic-idefics2-okvqa": ("mimic", 58.74), "mimic-llava-vqav2": ("mimic", 74.40),
}


def test_the_papers_protocols_are_all_there():
    assert len(NAMES) == 14
    for method in ("hificl", "mimic"):
        for bb in ("idefics2", "llava"):
            for ds in ("vqav2", "okvqa", "coco"):
                assert f"{method}-{bb}-{ds}" in NAMES
    assert {"mmict-instructblip-msvd", "mmict-instructblip-vqav2"} <= set(NAMES)
    p = load_preset("hificl-llava-okvqa")
    assert p["method"]["config"] == {"n_virtual": 8, "rank": 16} and p["train"]["samples"] == 1000
    assert p["train"]["sample_seed"] == 3407 and p["train"]["lr"] == 5e-3 and p["train"]["epochs"] == 3
    assert p["eval"]["num_beams"] == 3 and p["eval"]["max_new_tokens"] == 20 and p["backbone"]["quant"] == "4bit"
    assert p["baselines"] == [{"method": "icl", "shots": 8}]
    m = load_preset("mmict-instructblip-msvd")
    assert (m["train"]["lr"], m["train"]["warmup_steps"], m["train"]["epochs"]) == (1e-5, 1000, 5)
    assert (m["eval"]["num_beams"], m["eval"]["max_new_tokens"], m["eval"]["min_new_tokens"]) == (5, 30, 8)
    for name, (method, value) in PAPER.items():
        rows = [(r["method"], r["shots"], r["value"]) for r in load_preset(name)["reference"]["rows"]]
        assert (method, 0, value) in rows


@pytest.mark.parametrize("name", NAMES)
def test_every_preset_builds_its_pipeline_on_a_tiny_config(name, tmp_path):
    preset = load_preset(name, ["backbone.quant=none"])
    summary = run_preset(preset, tiny=preset["backbone"]["tiny"], out_dir=tmp_path, dry_run=True, log=lambda *a: None)
    assert summary["preset"] == name and summary["backbone"]["kind"] == preset["backbone"]["tiny"]
    assert summary["method"]["name"] == preset["method"]["name"] and summary["method"]["trainable_params"] > 0
    assert summary["train"]["steps"] >= 1 and summary["eval"]["episodes"] == 8  # the fixture's evaluation split
    assert summary["metric"] == preset["reference"]["metric"]
    assert len(summary["evaluated"]) == 1 + len(preset["baselines"])


def test_a_tiny_4bit_run_trains_evaluates_and_compares_with_the_paper(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["preset", "run", "hificl-idefics2-vqav2", "--tiny", "--out", str(out), "--quiet",
               "--set", "train.max_steps=2", "--set", "eval.episodes=2"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "hificl-idefics2-vqav2 (tiny idefics2" in text and "72.08" in text and "66.2" in text
    res = json.loads((out / "results.json").read_text())
    assert res["summary"]["backbone"]["quant"] == "4bit" and res["summary"]["train"]["steps"] == 2
    hificl, icl = res["rows"]
    assert hificl["train"]["steps"] == 2 and math.isfinite(hificl["train"]["loss_last"])
    assert hificl["metric"] == "vqa_accuracy" and 0.0 <= hificl["score"] <= 1.0 and icl["label"] == "icl:8"
    cmp = {r["method"]: r for r in res["comparison"]}
    assert cmp["hificl"]["paper"] == 72.08 and cmp["icl:8"]["paper"] == 66.2
    assert cmp["hificl"]["delta"] == pytest.approx(cmp["hificl"]["measured"] - 72.08, abs=0.011)
    assert (out / "adapter-hificl" / "adapter.safetensors").is_file()


def test_bad_keys_and_values_are_clear_errors(tmp_path):
    with pytest.raises(PresetError, match=r"unknown key 'train\.epoch'; train takes: .*epochs"):
        load_preset("hificl-idefics2-vqav2", ["train.epoch=3"])
    with pytest.raises(PresetError, match=r"train\.epochs must be a whole number"):
        load_preset("hificl-idefics2-vqav2", ["train.epochs=three"])
    with pytest.raises(PresetError, match=r"backbone\.quant must be one of none, 8bit, 4bit; got '3bit'"):
        load_preset("hificl-idefics2-vqav2", ["backbone.quant=3bit"])
    with pytest.raises(PresetError, match=r"unknown preset 'hificl-idefics9'.*hificl-idefics2-vqav2"):
        load_preset("hificl-idefics9")
    with pytest.raises(PresetError, match="KEY=VALUE"):
        load_preset("hificl-idefics2-vqav2", ["train.lr"])
    with pytest.raises(PresetError, match=r"train\.epochs must be set \(int\); got null"):
        load_preset("hificl-idefics2-vqav2", ["train.epochs=null"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: [missing.yaml]\n")
    with pytest.raises(PresetError, match="does not exist"):
        load_preset(str(bad))
    bad.write_text(f"extends: [{CONFIGS_DIR / '_base' / 'hificl.yaml'}]\ndescription: mine\ntrain: {{epochs: 1}}\n")
    with pytest.raises(PresetError, match="missing backbone, data"):
        load_preset(str(bad))
    # values only the method / the dataset can judge: checked when the pipeline is built
    for sets, match in ((["method.config.rank=0"], r"method\.config.*rank"),
                        (["method.config.ranks=4"], r"method\.config.*no field.*ranks"),
                        (["method.name=hifcl"], "unknown method 'hifcl'"),
                        (["data.video_dir=/x"], r"data\.video_dir does not apply to vqav2")):
        with pytest.raises(ValueError, match=match):
            build_pipeline(load_preset("hificl-idefics2-vqav2", sets + ["backbone.quant=none"]), tiny="idefics2",
                           out_dir=tmp_path)
    assert main(["preset", "show", "hificl-idefics2-vqav2", "--set", "eval.num_beams=many"]) == 2


def test_set_and_flags_override(tmp_path, capsys):
    p = load_preset("mimic-llava-coco", ["train.lr=1e-4", "method.config.train_shots=2", "eval.episodes=3",
                                         "train.max_steps=1", "backbone.quant=none", "data.eval_split=test",
                                         "baselines=[]"])
    assert p["train"]["lr"] == 1e-4 and isinstance(p["train"]["lr"], float)  # YAML's "1e-4" text is coerced
    assert p["method"]["config"]["train_shots"] == 2 and p["method"]["config"]["ce_weight"] == 0.5  # merged
    pipe = build_pipeline(p, tiny="llava", out_dir=tmp_path)
    assert pipe.method.config.train_shots == 2 and pipe.train_config.lr == 1e-4 and pipe.train_config.steps == 1
    assert pipe.episodes == 3 and pipe.baselines == [] and pipe.train_config.batch_size == 4  # 2 x accum 2
    assert apply_overrides({"a": {"b": 1}}, ["a.c.d=x"]) == {"a": {"b": 1, "c": {"d": "x"}}}
    as_json = tmp_path / "mine.json"  # a preset may be a JSON file anywhere
    as_json.write_text(json.dumps({k: v for k, v in p.items() if k != "name"}))
    assert load_preset(str(as_json)) == {**p, "name": "mine"}
    assert main(["preset", "show", "hificl-llava-vqav2", "--data-root", "/data", "--backbone", "/w/llava",
                 "--quant", "8bit", "--set", "eval.batch_size=4"]) == 0
    shown = capsys.readouterr().out
    for line in ("root: /data/vqav2", "path: /w/llava", "quant: 8bit", "batch_size: 4"):
        assert line in shown


def test_training_split_is_the_seeded_samples_with_the_papers_prompt(tmp_path):
    from mmict_core.data.real import choose_subset

    p = load_preset("hificl-idefics2-vqav2", ["backbone.quant=none", "train.samples=5"])
    pipe = build_pipeline(p, tiny="idefics2", out_dir=tmp_path)
    train = pipe.task.dataset("train")
    full = [r.meta["question_id"] for r in pipe.task.splits["train"].args[0]().records]  # the split as loaded
    assert sorted(r.meta["question_id"] for r in train.records) == [full[i] for i in choose_subset(len(full), 5, 3407)]
    assert len(pipe.task.support_set()) == 5 and pipe.train_config.samples == 5  # demos come from the same 5
    assert all(r.prompt.startswith("Question: ") and r.prompt.endswith(" Short answer:") for r in train.records)
    msvd = build_pipeline(load_preset("mmict-instructblip-msvd", ["backbone.quant=none"]), tiny="instructblip",
                          out_dir=tmp_path / "msvd")
    items = msvd.task.dataset("train").records  # one item per (video, caption): the fixture has 2 captions each
    assert len(items) == 2 * 24 and len({(r.media[0], r.answers[0]) for r in items}) == 48


def test_list_and_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "mmict_core.cli", "preset", "list"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert "hificl-idefics2-vqav2" in out.stdout and "72.08" in out.stdout and "mmict-instructblip-msvd" in out.stdout


def test_runs_under_accelerate_launch_with_one_process(tmp_path):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "mmict_core.cli", "preset", "run",
           "mmict-instructblip-msvd", "--tiny", "--quiet", "--out", str(tmp_path), "--set", "backbone.quant=none",
           "--set", "train.max_steps=1", "--set", "eval.episodes=1", "--set", "baselines=[]"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert [r["label"] for r in res["rows"]] == ["mmict"] and res["rows"][0]["train"]["steps"] == 1


def test_missing_checkpoint_or_data_fails_fast_with_where_to_put_them(tmp_path, monkeypatch, capsys):
    from mmict_core.presets.pipeline import build_task

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["preset", "run", "hificl-idefics2-vqav2", "--dry-run", "--data-root", str(tmp_path)]) == 2
    assert "huggingface-cli download HuggingFaceM4/idefics2-8b-base" in capsys.readouterr().err  # no weights here
    monkeypatch.delenv("MMICT_DATA_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match="MMICT_DATA_ROOT"):  # nor the data
        build_task(load_preset("hificl-idefics2-vqav2"), None, tmp_path)


def _parallel_worker(rank: int, port: int, queue) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from mmict_core.parallel import data_parallel

    class Toy(torch.nn.Module):  # loss = mean over its episodes (numbers x) of (w - x)^2
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(2))

        def trainable_parameters(self):
            return [self.w]

        def loss(self, episodes, loss_on="query"):
            x = torch.tensor(episodes, dtype=torch.float32)
            return ((self.w - x[:, None]) ** 2).sum(-1).mean(), {"n": len(episodes)}

    m = Toy()
    with data_parallel(m, batch_size=4):
        loss, parts = m.loss([1.0, 2.0, 3.0, 6.0])
        loss.backward()
    queue.put((rank, parts["n"], m.w.grad.tolist()))


def test_data_parallel_shares_each_batch_and_averages_gradients():
    ctx = torch.multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    port = 29500 + os.getpid() % 1000
    procs = [ctx.Process(target=_parallel_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    got = sorted(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    # rank 0 takes episodes 1, 3 and rank 1 takes 2, 6; d/dw mean (w - x)^2 at w = 0 is -2 mean(x):
    # rank 0: -4, rank 1: -8; averaged: -6 on both, the full batch's gradient
    assert got == [(0, 2, [-6.0, -6.0]), (1, 2, [-6.0, -6.0])]
