"""Non-finite training stops in the trainer itself; NaN adapters are refused on the way in; values out
of range are refused, never replaced by a default."""
from __future__ import annotations

import json
import math

import pytest
import torch

from mmict_core.backbones import TeachingVLM
from mmict_core.cli import main
from mmict_core.methods import AdapterLoadError, get_method
from mmict_core.methods.base import read_adapter
from mmict_core.train import TrainConfig, TrainingDiverged, train
from mmict_core.vlibrary import LibraryError, VLibrary
from mmict_core.workbench import TrainRequest, WorkbenchError

TINY = dict(task="binding", steps=5, samples=4, batch_size=2)


@pytest.fixture(scope="module")
def vlm():
    return TeachingVLM.create(seed=0)


def _lora(vlm):
    cls = get_method("lora")
    return cls(vlm, cls.config_class(r=2))


def _nan_loss_at(method, bad_step: int, monkeypatch, value=float("nan")):
    """Make ``method.loss`` return ``value`` (keeping the graph) on call number ``bad_step`` (1-based)."""
    real, calls = method.loss, {"n": 0}

    def loss(episodes, loss_on="query"):
        calls["n"] += 1
        out, parts = real(episodes, loss_on=loss_on)
        return (out * value if calls["n"] == bad_step else out), parts

    monkeypatch.setattr(method, "loss", loss)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_first_nonfinite_loss_stops_at_that_step_before_the_update(vlm, monkeypatch, value, tmp_path):
    m = _lora(vlm)
    reference = _lora(vlm)  # same init: trained for the 2 good steps only
    train(reference, TrainConfig(**{**TINY, "steps": 5}), progress=False,
          callback=lambda step, *_: False if step == 2 else None)
    _nan_loss_at(m, 3, monkeypatch, value)
    seen = []
    with pytest.raises(TrainingDiverged) as exc:
        train(m, TrainConfig(**TINY), out_dir=tmp_path, progress=False, callback=lambda s, t, l, p: seen.append(s))
    assert str(exc.value) == "training diverged at step 3: lower the learning rate"
    assert exc.value.step == 3 and seen == [1, 2]
    # the bad step did not move the adapter: it equals two plain steps from the same start
    for k, v in m.state_dict().items():
        assert torch.isfinite(v).all() and torch.equal(v, reference.state_dict()[k]), k
    assert not (tmp_path / "train_log.json").exists() and not (tmp_path / "checkpoint").exists()


def test_nonfinite_gradient_with_a_finite_loss_stops_too(vlm, monkeypatch):
    m = _lora(vlm)
    p = m.trainable_parameters()[0]
    calls = {"n": 0}

    def poison(grad):
        calls["n"] += 1
        return grad * float("inf") if calls["n"] == 2 else grad

    p.register_hook(poison)
    with pytest.raises(TrainingDiverged, match=r"^training diverged at step 2: lower the learning rate$") as exc:
        train(m, TrainConfig(**TINY), progress=False)
    assert exc.value.what == "gradient"


def test_cli_train_divergence_exits_nonzero_and_saves_nothing(tmp_path, monkeypatch, capsys):
    from mmict_core.methods.lora.model import LoRA

    real, calls = LoRA.loss, {"n": 0}

    def loss(self, episodes, loss_on="query"):
        calls["n"] += 1
        out, parts = real(self, episodes, loss_on=loss_on)
        return (out * float("nan") if calls["n"] == 2 else out), parts

    monkeypatch.setattr(LoRA, "loss", loss)
    out = tmp_path / "run"
    rc = main(["train", "--method", "lora", "--task", "binding", "--out", str(out), "--steps", "4", "--samples", "4",
               "--batch-size", "2", "--lr", "5"])
    assert rc != 0
    assert "training diverged at step 2: lower the learning rate" in capsys.readouterr().err
    assert not (out / "adapter").exists() and not (out / "train_log.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--lr", "0"], "lr must be in"),
    (["--lr", "-1"], "lr must be in"),
    (["--lr", "nan"], "lr must be a finite number"),
    (["--set", "r=0"], "r must be in"),
    (["--steps", "0"], "must be >= 1"),
])
def test_cli_train_out_of_range_is_refused(tmp_path, capsys, args, message):
    base = ["train", "--method", "lora", "--task", "binding", "--out", str(tmp_path / "o"), "--samples", "4",
            "--batch-size", "2", "--steps", "1"]
    try:
        rc = main(base + args)
    except SystemExit as e:  # argparse's own refusals
        rc = e.code
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o" / "adapter").exists()


@pytest.mark.parametrize("field, value, message", [
    ("lr", 0.0, "learning rate must be between"), ("lr", -1e-3, "learning rate must be between"),
    ("lr", float("nan"), "learning rate must be between"), ("rank", 0, "rank must be a whole number"),
    ("rank", float("nan"), "rank must be a whole number"), ("steps", 0, "steps must be a whole number"),
    ("samples", 0, "samples must be a whole number"), ("samples", None, "samples must be a whole number"),
    ("batch_size", 0, "batch_size must be a whole number")])
def test_train_request_refuses_instead_of_defaulting(field, value, message):
    req = TrainRequest(method="lora", task="binding", **{field: value})
    with pytest.raises(WorkbenchError, match=message):
        req.validate()


def test_train_config_refuses_nonfinite_numbers():
    for lr in (float("nan"), float("inf"), 0.0):
        with pytest.raises(ValueError, match="lr"):
            TrainConfig(lr=lr)


def _nan_adapter(vlm, path):
    m = _lora(vlm)
    m.save(path)
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path / "adapter.safetensors"))
    k = sorted(tensors)[0]
    tensors[k][0, 0] = float("nan")
    save_file(tensors, str(path / "adapter.safetensors"))
    return m, k


def test_loading_and_library_refuse_nonfinite_adapters(vlm, tmp_path, capsys):
    m, k = _nan_adapter(vlm, tmp_path / "bad")
    with pytest.raises(AdapterLoadError, match="NaN or infinite values .* lower learning rate"):
        read_adapter(tmp_path / "bad")
    with pytest.raises(AdapterLoadError, match="NaN or infinite"):
        get_method("lora").load(tmp_path / "bad", vlm)
    lib = VLibrary(tmp_path / "lib")
    with pytest.raises(AdapterLoadError, match="NaN or infinite"):
        lib.add_folder("bad", tmp_path / "bad", task="binding")
    with torch.no_grad():
        m.trainable_parameters()[0].view(-1)[0] = float("inf")
    with pytest.raises(LibraryError, match="NaN or infinite values .* diverged"):
        lib.add("bad", m, task="binding")
    assert lib.list() == []
    rc = main(["vlibrary", "add", "bad", "--from", str(tmp_path / "bad"), "--task", "binding", "--root", str(lib.root)])
    assert rc == 2 and "NaN or infinite" in capsys.readouterr().err
    # a finite adapter still goes in afterwards
    good = _lora(vlm)
    good.save(tmp_path / "good")
    assert main(["vlibrary", "add", "good", "--from", str(tmp_path / "good"), "--task", "binding",
                 "--root", str(lib.root)]) == 0
    assert [e["name"] for e in lib.list()] == ["good"]


def test_training_panel_shows_the_divergence_and_stores_nothing(vlm, tmp_path, monkeypatch):
    from mmict_core.methods.lora.model import LoRA
    from mmict_core.widgets import TrainingPanel
    from mmict_core.workbench import Session

    real = LoRA.loss
    monkeypatch.setattr(LoRA, "loss", lambda self, eps, loss_on="query": (
        (lambda out: (out[0] * float("inf"), out[1]))(real(self, eps, loss_on=loss_on))))
    s = Session(vlm, library_root=tmp_path / "lib", pool_size=4)
    t = TrainingPanel(s, threaded=False, method="lora", steps=3, samples=4, batch_size=2)
    t.train_button.click()
    assert "training failed: training diverged at step 1: lower the learning rate" in t.status.value
    assert t.progress.bar_style == "danger" and s.adapters == {} and VLibrary(tmp_path / "lib").list() == []
    monkeypatch.setattr(LoRA, "loss", real)
    t.train_button.click()  # the next run works
    assert "finished" in t.status.value and len(s.adapters) == 1


def test_clip_or_diverge_stops_before_the_update():
    from mmict_core.train import clip_or_diverge

    w = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(TrainingDiverged, match="step 5"):
        clip_or_diverge([w], 1.0, torch.tensor(float("nan")), 4)
    w.grad = torch.tensor([1.0, float("inf"), 0.0])
    with pytest.raises(TrainingDiverged) as e:
        clip_or_diverge([w], 1.0, torch.tensor(2.0), 0)
    assert e.value.what == "gradient" and e.value.step == 1
    w.grad = torch.tensor([3.0, 4.0, 0.0])
    assert clip_or_diverge([w], 1.0, torch.tensor(2.0), 0) == pytest.approx(5.0)  # the norm before clipping
    assert torch.allclose(w.grad, torch.tensor([0.6, 0.8, 0.0]), atol=1e-5)  # clipped to norm 1


@pytest.mark.parametrize("stage", ["vision", "induction", "hub", "episodes"])
def test_every_pretraining_stage_stops_at_a_nonfinite_loss(stage, tmp_path, monkeypatch):
    """The teaching VLM's pretraining loops stop at step 1 when the loss is NaN: the model holds a
    NaN (for the M-Hub stage, whose start-up probe cannot read NaN features, its loss is made NaN)."""
    from mmict_core.teaching import PretrainConfig, hub, pretrain_teaching

    vlm = TeachingVLM.create(seed=0)
    if stage == "hub":
        real = hub.hub_losses
        monkeypatch.setattr(hub, "hub_losses", lambda *a, **k: (lambda r: (r[0] * float("nan"), *r[1:]))(real(*a, **k)))
    else:
        with torch.no_grad():  # one NaN in the word embeddings and one in the ViT's patch projection
            vlm.model.get_input_embeddings().weight[:, 0] = float("nan")
            next(vlm.model.vision_model.parameters()).view(-1)[0] = float("nan")
    src = tmp_path / "poisoned"
    vlm.save(src)
    steps = dict(vision=dict(vision_steps=2, hub_steps=0, induction_steps=0, steps=1),
                 hub=dict(vision_steps=0, hub_steps=2, induction_steps=0, steps=1),
                 induction=dict(vision_steps=0, hub_steps=0, induction_steps=2, steps=1),
                 episodes=dict(vision_steps=0, hub_steps=0, induction_steps=0, steps=2))[stage]
    cfg = PretrainConfig(init_from=str(src), batch=2, vision_batch=4, hub_batch=4, eval_every=0, eval_episodes=0,
                         probe_scenes=30, **steps)
    with pytest.raises(TrainingDiverged, match="step 1"):
        pretrain_teaching(tmp_path / "out", cfg, progress=False)
