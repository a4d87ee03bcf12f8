"""Data-parallel training with the shared trainer: two CPU processes (gloo) train HiFICL on the teaching
VLM; afterwards both hold the same adapter, equal to a single process trained on the same global
batches (the independent reference) -- with even and uneven slices, and across a stop + resume.
Only the main process calls the callback and writes the checkpoint and the log."""
from __future__ import annotations

import json
import os
import socket
import traceback

import pytest
import torch

from mmict_core.parallel import SINGLE, World, shard
from mmict_core.train import TrainConfig, train, training_batch

# Parameters after the steps: AdamW divides by sqrt(v) + 1e-8, so in the few adapter entries whose
# gradient is ~1e-9 the float rounding of summing the batch in another order (2 slices instead of 1)
# is amplified ~lr/1e-8 times -- one process summing the two slices itself shows the same (measured,
# lr 1e-3: at most a handful of 10,240 entries above 1e-6, the largest 1.8e-6; the bulk within 1e-7).
# So: every entry within a small fraction of one step (0.02 lr), all but 0.1 % within 1e-6.  The
# first step's gradients, where nothing is amplified, are compared entry by entry.
EVEN = dict(task="binding", steps=3, batch_size=4, lr=1e-3, seed=0)
UNEVEN = dict(task="binding", steps=3, batch_size=5, lr=1e-3, seed=0)  # slices of 3 and 2 episodes


def _hificl(vlm):
    from mmict_core.methods import get_method
    from mmict_core.methods.hificl import HiFICLConfig

    return get_method("hificl")(vlm, HiFICLConfig(seed=1))


def _state(m) -> dict:  # numpy: sent by value through the queue (tensors would go by shared memory)
    return {k: v.detach().cpu().numpy().copy() for k, v in m.state_dict().items()}


def _record_gradients(m, into: list):
    """Record the gradients the optimiser steps with (after averaging and clipping), by name."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    names = {id(p): n for n, p in m.named_parameters()}

    def hook(opt, args, kwargs):
        into.append({names[id(p)]: p.grad.detach().cpu().numpy().copy()
                     for g in opt.param_groups for p in g["params"] if p.grad is not None})
    return register_optimizer_step_pre_hook(hook)


def _worker(rank: int, port: int, out: str, queue) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    try:
        from mmict_core.backbones import TeachingVLM
        from mmict_core.parallel import world

        vlm = TeachingVLM.create(seed=0)
        calls, grads = [], []
        m = _hificl(vlm)
        hook = _record_gradients(m, grads)
        res = train(m, TrainConfig(**EVEN), out_dir=os.path.join(out, "even"), progress=False,
                    callback=lambda s, n, loss, parts: calls.append((s, loss)))
        hook.remove()
        even = (_state(m), res.losses, grads[0])
        # uneven slices; the main process's callback stops after step 1, then every process resumes
        m, grads = _hificl(vlm), []
        cfg = TrainConfig(**UNEVEN)
        hook = _record_gradients(m, grads)
        first = train(m, cfg, out_dir=os.path.join(out, "uneven"), progress=False, callback=lambda s, n, l, p: s < 1)
        hook.remove()
        m = _hificl(vlm)
        res = train(m, cfg, out_dir=os.path.join(out, "uneven"), resume=True, progress=False)
        queue.put((rank, {"world": tuple(world()), "even": even, "calls": calls, "first_steps": first.steps,
                          "uneven": (_state(m), res.losses, grads[0], res.resumed_from)}))
    except BaseException:
        queue.put((rank, {"error": traceback.format_exc()}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_training_batch_slices_make_up_the_single_process_batch():
    from mmict_core.backbones import TeachingVLM

    m = _hificl(TeachingVLM.create(seed=0))
    cfg = TrainConfig(task="binding", batch_size=5, mix_fixed=0.5, seed=3)
    whole = training_batch(m, cfg, 2)
    key = lambda ep: (ep.task, ep.query.images[0].tobytes(), ep.query.prompt, tuple(ep.query.answers))  # noqa: E731
    assert [key(e) for e in training_batch(m, cfg, 2, SINGLE)] == [key(e) for e in whole]
    slices = [training_batch(m, cfg, 2, World(r, 2, r)) for r in range(2)]
    assert [len(s) for s in slices] == [3, 2]
    for r in range(2):
        assert [key(e) for e in slices[r]] == [key(e) for e in shard(whole, World(r, 2, r))]
        assert [key(e) for e in slices[r]] == [key(e) for e in whole[r::2]]


def test_two_processes_train_one_adapter_equal_to_one_process(tmp_path):
    from mmict_core.backbones import TeachingVLM

    ctx = torch.multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, str(tmp_path), queue)) for r in range(2)]
    for p in procs:
        p.start()
    got: dict = {}
    try:
        for _ in procs:
            rank, res = queue.get(timeout=120)
            assert "error" not in res, f"process {rank} failed:\n{res['error']}"
            got[rank] = res
    finally:
        for p in procs:
            p.join(timeout=30 if len(got) == len(procs) else 1)
            if p.is_alive():
                p.kill()
    for r in range(2):
        assert got[r]["world"] == (r, 2, r)

    # the independent reference: one process, the same global batches
    vlm = TeachingVLM.create(seed=0)
    refs = {}
    for run, cfg in (("even", EVEN), ("uneven", UNEVEN)):
        ref, grads = _hificl(vlm), []
        hook = _record_gradients(ref, grads)
        try:
            refs[run] = (ref, train(ref, TrainConfig(**cfg), progress=False).losses, grads[0])
        finally:
            hook.remove()
    ref_losses = refs["even"][1]

    for run, (ref, losses, grads) in refs.items():
        for r in range(2):  # the first step's gradient is the whole batch's, on each process
            assert set(got[r][run][2]) == set(grads)
            for k, g in grads.items():
                # summing 3 + 2 episodes instead of 5 rounds differently: float32 carries ~1.2e-7 of the
                # largest entry (V_B's is ~0.14, seen off by 3e-8), so allow ~8 ulps of the largest entry
                torch.testing.assert_close(torch.from_numpy(got[r][run][2][k]), torch.from_numpy(g), rtol=1e-5,
                                           atol=max(1e-8, 1e-6 * float(abs(g).max())), msg=lambda m: f"{run}: the gradient of {k} on process {r} (max {abs(g).max():.3g})\n{m}")
        s0, s1 = ({k: torch.from_numpy(v) for k, v in got[r][run][0].items()} for r in range(2))
        assert set(s0) == set(ref.state_dict())
        for k in s0:
            assert torch.equal(s0[k], s1[k]), f"{run}: {k} differs between the processes"
        diff = torch.cat([(s0[k] - v).abs().flatten() for k, v in ref.state_dict().items()])
        lr = TrainConfig(**(EVEN if run == "even" else UNEVEN)).lr
        assert float(diff.max()) <= 0.02 * lr, f"{run}: differs from one process by {float(diff.max()):.3g}"
        assert float((diff > 1e-6).float().mean()) <= 1e-3, f"{run}: {int((diff > 1e-6).sum())} entries differ > 1e-6"
        assert got[0][run][1] == pytest.approx(losses[-len(got[0][run][1]):], abs=1e-5)  # the whole batch's losses
    # training moved the adapter (the comparison above is not between two untouched initialisations)
    init = _hificl(vlm).state_dict()
    assert all((refs["even"][0].state_dict()[k] - init[k]).abs().max() > 1e-4 for k in init)

    # main process only: the callback (with the whole batch's loss), checkpoints and the log
    assert [s for s, _ in got[0]["calls"]] == [1, 2, 3] and got[1]["calls"] == []
    assert [loss for _, loss in got[0]["calls"]] == pytest.approx(ref_losses, abs=1e-5)
    assert got[0]["first_steps"] == got[1]["first_steps"] == 1  # the main process's stop reached both
    assert got[0]["uneven"][3] == got[1]["uneven"][3] == 1  # both resumed from the checkpoint at step 1
    log = json.loads((tmp_path / "even" / "train_log.json").read_text())
    assert log["processes"] == 2 and log["steps"] == 3
    assert (tmp_path / "uneven" / "checkpoint" / "trainer.safetensors").is_file()
    assert not list(tmp_path.rglob("*.tmp"))
