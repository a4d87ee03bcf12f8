"""The contract every registered method keeps (peft-style), checked on any backbone.

Used by tests/test_method_contract.py (teaching VLM x fp32 / 8-bit / 4-bit) and the tiny
real-backbone matrix (tests/test_real_backbones.py).  A new method gets all of it by registering
(and, for speed, declaring ``tiny_config``); its own test file keeps only its formula tests.
"""
from __future__ import annotations

import math

import torch

from mmict_core.data import make_episode
from mmict_core.methods import create_method, get_method
from mmict_core.train import TrainConfig, train


def episodes(k: int = 3, n: int = 2, task: str = "shapes-vqa"):
    # indices 0 and 1 have prompts of different lengths: batches are padded
    return [make_episode(task, k, seed=0, index=i, split="train") for i in range(n)]


def make(name: str, bb):
    """``name`` with its tiny test config, its parameters nudged off their (often no-op) init."""
    m = create_method(name, bb, **get_method(name).tiny_config)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in m.parameters():
            if p.is_floating_point():
                p.add_(torch.randn(p.shape, generator=g).to(p.device, p.dtype) * 0.05)
    return m


def backbone_state(bb) -> tuple:
    """Everything attaching may touch: parameters, hooks per module, the text config's attention."""
    params = {k: v.detach().clone() for k, v in bb.model.state_dict().items()}
    hooks = {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in bb.model.named_modules()}
    mods = {n: type(m) for n, m in bb.model.named_modules()}
    return params, hooks, mods, bb.text_config._attn_implementation


def assert_same_state(a: tuple, b: tuple) -> None:
    assert a[1] == b[1], "hooks left behind"
    assert a[2] == b[2], "modules swapped and not restored"
    assert a[3] == b[3], "attention implementation not restored"
    assert a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0]), "backbone weights changed"


def check_attach_detach(m, bb, eps) -> None:
    """Bit-identical outputs and state after attached(), also when the block raises."""
    batch = bb.assemble_episodes(eps, with_answer=True)
    state = backbone_state(bb)
    with torch.no_grad():
        before = bb.forward(batch)
        with m.attached():
            during = bb.forward(m.batch(eps, with_answer=True))
        after = bb.forward(batch)
        try:
            with m.attached():
                m.batch(eps, with_answer=True)
                raise KeyError("boom inside attached()")
        except KeyError:
            pass
        again = bb.forward(batch)
    assert torch.isfinite(before).all() and torch.isfinite(during).all()
    assert torch.equal(before, after) and torch.equal(before, again)
    assert_same_state(state, backbone_state(bb))
    assert m._depth == 0


def check_gradients(m, bb, eps) -> None:
    """One loss: finite; gradients on every adapter parameter and on nothing of the backbone."""
    m.train()
    loss, parts = m.loss(eps)
    assert math.isfinite(float(loss)), parts
    params = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
    assert bool(params) == m.needs_training or m.needs_training  # training-free methods have nothing to train
    if params:
        loss.backward()
        for n, p in params:
            assert p.grad is not None and torch.isfinite(p.grad).all(), n
        assert any(p.grad.abs().sum() > 0 for _, p in params)
        m.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in bb.model.parameters())
    # no 4-bit weight was repacked for bitsandbytes' CPU inference kernel, which has no backward
    assert not any(getattr(getattr(mod.weight, "quant_state", None), "packing_format_for_cpu", False)
                   for mod in bb.model.modules() if hasattr(mod, "support_avx512bf16_for_cpu"))
    m.eval()


def check_round_trip(m, bb, eps, path) -> None:
    """save -> load: same config, bit-identical tensors and attached logits."""
    m.save(path)
    loaded = type(m).load(path, bb)
    assert loaded.config == m.config
    own, back = m.state_dict(), loaded.state_dict()
    assert own.keys() == back.keys() and all(torch.equal(own[k], back[k]) for k in own)
    loaded.train(m.training)
    with torch.no_grad():
        with m.attached():
            a = bb.forward(m.batch(eps, with_answer=True))
        with loaded.attached():
            b = bb.forward(loaded.batch(eps, with_answer=True))
    assert torch.equal(a, b)


def check_trainer_step(m, bb) -> None:
    """Trainable methods: one step of the shared trainer changes the adapter; training-free: nothing to train."""
    if not m.needs_training:
        assert m.num_trainable() == 0
        return
    start = {k: v.detach().clone() for k, v in m.state_dict().items()}
    res = train(m, TrainConfig(task="shapes-vqa", steps=1, samples=2, batch_size=2, lr=1e-2), progress=False)
    assert res.steps == 1 and all(math.isfinite(x) for x in res.losses)
    assert any(not torch.equal(start[k], v) for k, v in m.state_dict().items())
    assert all(p.grad is None for p in bb.model.parameters())


def check_parameter_count(m) -> None:
    expected = m.expected_num_parameters()
    assert expected is not None, f"{type(m).__name__} declares no expected_num_parameters()"
    assert m.num_trainable() == expected


def check_generation(m, bb, eps) -> None:
    out = m.generate(eps, max_new_tokens=2)
    assert len(out) == len(eps) and all(isinstance(s, str) for s in out)


def check_contract(name: str, bb, path) -> None:
    eps = episodes()
    m = make(name, bb)
    check_parameter_count(m)
    check_attach_detach(m, bb, eps)
    check_gradients(m, bb, eps)
    check_generation(m, bb, eps)
    check_round_trip(m, bb, eps, path)
    check_trainer_step(m, bb)
    check_attach_detach(m, bb, eps)  # still clean after training
