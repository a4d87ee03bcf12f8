"""One trainer for every method: AdamW, linear warmup + cosine decay, gradient clipping, answer-only
or full-sequence loss, seeds, progress (tqdm and a callable hook), checkpoints and resume, and
data parallelism: launched by ``torchrun`` / ``accelerate launch`` with N processes (one per GPU, or
gloo CPU processes), each process computes the loss on its slice of every step's batch and the
adapter's gradients are averaged over the processes before clipping and the step
(:mod:`mmict_core.parallel`); only the main process logs, checkpoints and writes the log.  One
process runs exactly as before.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .data import Episode, get_task, make_episode
from .data.tasks import episode_rng
from .methods.base import Method, check_range
from .parallel import SINGLE, World, agree, average_parts, barrier, broadcast_parameters, reduce_gradients, world

FIXED_TASKS = ("shapes-vqa", "shapes-caption", "digits")


@dataclass
class TrainConfig:
    """How a method is trained (the method's own config says what is trained)."""

    task: str = field(default="binding", metadata={"help": "task to train on (see `mmict tasks`)"})
    samples: int = field(default=1000, metadata={"help": "distinct training queries (the paper protocols use 1,000)"})
    steps: int = field(default=200, metadata={"help": "optimiser steps"})
    batch_size: int = field(default=8, metadata={"help": "episodes per step"})
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "fraction of steps of linear warmup"})
    min_lr_ratio: float = field(default=0.0, metadata={"help": "final lr of the cosine decay, relative to lr"})
    weight_decay: float = field(default=1e-3, metadata={"help": "AdamW weight decay (not on 1-D parameters)"})
    clip: float = field(default=1.0, metadata={"help": "gradient-norm clipping (0 = off)"})
    loss_on: str = field(default="answer", metadata={"help": "'answer': the query's answer tokens; 'full': every answer in the input"})
    mix_fixed: float = field(default=0.0, metadata={"help": "fraction of each batch drawn from the fixed-knowledge tasks, so the adapter keeps them"})
    fixed_binding: bool = field(default=False, metadata={"help": "binding task: one binding for training and test"})
    seed: int = field(default=0, metadata={"help": "seed of the episode stream and of torch"})
    checkpoint_every: int = field(default=0, metadata={"help": "save a resumable checkpoint every N steps (0 = only at the end)"})

    def __post_init__(self) -> None:
        get_task(self.task)
        check_range(self, "samples", 1, None)
        check_range(self, "steps", 1, None)
        check_range(self, "batch_size", 1, 4096)
        check_range(self, "lr", 1e-8, 10.0)
        check_range(self, "warmup_ratio", 0.0, 1.0)
        check_range(self, "min_lr_ratio", 0.0, 1.0)
        check_range(self, "weight_decay", 0.0, 10.0)
        check_range(self, "clip", 0.0, None)
        check_range(self, "loss_on", choices=("answer", "full"))
        check_range(self, "mix_fixed", 0.0, 1.0)
        check_range(self, "checkpoint_every", 0, None)


class TrainingDiverged(ValueError):
    """The loss or a gradient became NaN/inf: training stopped at that step and nothing was saved."""

    def __init__(self, step: int, what: str = "loss"):
        self.step, self.what = step, what
        super().__init__(f"training diverged at step {step}: lower the learning rate")


def clip_or_diverge(params, max_norm: float, loss: torch.Tensor, step: int) -> float:
    """``clip_grad_norm_`` for hand-written loops (the teaching VLM's pretraining stages): raises
    :class:`TrainingDiverged` at the first NaN/inf loss or gradient, before the optimiser step, so
    no non-finite value reaches the weights.  Returns the gradient norm before clipping."""
    params = list(params)
    if not math.isfinite(float(loss.detach())):
        raise TrainingDiverged(step + 1, "loss")
    norm = float(nn.utils.clip_grad_norm_(params, max_norm))
    if not math.isfinite(norm):
        raise TrainingDiverged(step + 1, "gradient")
    return norm


def _grads_finite(params) -> bool:
    """True when every gradient present is finite (one fused reduction, no host sync per tensor)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


@dataclass
class TrainResult:
    steps: int
    seconds: float
    losses: list[float]
    parts: list[dict]
    resumed_from: int = 0
    processes: int = 1  # data-parallel processes that shared each batch


def lr_factor(step: int, total: int, warmup_ratio: float, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to ``min_ratio``."""
    warm = int(round(warmup_ratio * total))
    if step < warm:
        return (step + 1) / warm
    p = (step - warm) / max(1, total - warm)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))


def training_batch(method: Method, cfg: TrainConfig, step: int, world: World = SINGLE) -> list[Episode]:
    """The episodes of ``step``: queries cycle through ``samples`` distinct training episodes.  With a
    data-parallel ``world``, only this process's slice of that batch (episodes ``rank::size``; the
    batch itself does not depend on the number of processes)."""
    task = get_task(cfg.task, **({"fixed_binding": True} if cfg.fixed_binding and cfg.task == "binding" else {}))
    rng = episode_rng(cfg.seed, "train", "trainer-mix", step)
    k = method.config.train_shots
    eps = []
    for b in range(cfg.batch_size):
        if cfg.mix_fixed > 0 and rng.random() < cfg.mix_fixed:  # every draw is made on every process
            t = get_task(FIXED_TASKS[rng.integers(len(FIXED_TASKS))])
            idx = int(rng.integers(cfg.samples))
        else:
            t, idx = task, (step * cfg.batch_size + b) % cfg.samples
        if b % world.size == world.rank:
            eps.append(make_episode(t, k, seed=cfg.seed, index=idx, split="train", pool_size=max(k, 1)))
    return eps


def _param_groups(method: Method, weight_decay: float) -> list[dict]:
    """The optimiser groups ``method`` declares (:meth:`Method.param_groups`)."""
    return method.param_groups(weight_decay)


def train(method: Method, cfg: TrainConfig, *, out_dir: str | Path | None = None, resume: bool = False,
          progress: bool = True, callback: Callable[[int, int, float, dict], bool | None] | None = None) -> TrainResult:
    """Train ``method`` by ``cfg``.  ``callback(step, total, loss, parts)`` is called after every
    step; returning False stops training early (the app's cancel button).  With ``out_dir``,
    a resumable checkpoint (adapter + optimiser + step) is written there.

    The first NaN/inf loss or gradient raises :class:`TrainingDiverged` (before that step updates the
    adapter; no checkpoint or log is written for it), in every front end alike.

    Under ``torchrun`` / ``accelerate launch`` with several processes, each step's batch is the one a
    single process would use, split over the processes (:func:`training_batch` with the world); the
    adapter's gradients are averaged over them, weighted by each one's share of the episodes, before
    clipping and the step, so every process holds the same adapter afterwards.  The losses (and what
    ``callback`` and the log see) are the whole batch's; progress bar, ``callback``, checkpoints and
    ``train_log.json`` happen on the main process only (its ``callback`` can stop all of them).
    ``out_dir`` must be on a file system every process sees when resuming."""
    from accelerate import Accelerator

    if not method.needs_training:
        raise ValueError(f"method {method.name!r} has nothing to train")
    params = method.trainable_parameters()
    if not params:
        raise ValueError(f"method {method.name!r} has no trainable parameters")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    accelerator = Accelerator(cpu=method.backbone.device.type == "cpu")
    w = world()  # after the Accelerator: it sets up the process group when launched
    if w.size > 1 and getattr(method, "_mmict_data_parallel", False):
        raise RuntimeError("train() shares each batch over the processes by itself; call it outside data_parallel()")
    opt = torch.optim.AdamW(_param_groups(method, cfg.weight_decay), lr=cfg.lr)
    for g in opt.param_groups:
        g.setdefault("lr_scale", 1.0)
        g["base_lr"] = cfg.lr * g["lr_scale"]
    opt = accelerator.prepare(opt)
    start = 0
    ckpt = Path(out_dir) / "checkpoint" if out_dir else None
    if resume and ckpt and (ckpt / "trainer.json").is_file():
        start = _load_checkpoint(ckpt, method, opt)
    if w.size > 1:
        lo, hi = agree([-start, start])
        if -lo != hi:
            raise RuntimeError(f"the processes resume from different steps ({int(-lo)} .. {int(hi)}): {ckpt} must be "
                               f"on a file system every process sees")
        broadcast_parameters(params)  # one starting point, whatever each process's initialisation did
    losses, parts_log = [], []
    t0 = time.time()
    loss_on = "query" if cfg.loss_on == "answer" else "all"
    method.train()
    bar = tqdm(range(start, cfg.steps), desc=f"train {method.name}", disable=not (progress and w.main),
               initial=start, total=cfg.steps)
    for step in bar:
        episodes = training_batch(method, cfg, step, w)
        if w.size == 1 or episodes:
            loss, parts = method.loss(episodes, loss_on=loss_on)
        else:  # more processes than episodes in the batch: this one contributes nothing this step
            loss, parts = None, {}
        f = lr_factor(step, cfg.steps, cfg.warmup_ratio, cfg.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * f
        opt.zero_grad(set_to_none=True)
        if loss is not None:
            accelerator.backward(loss)
        if w.size > 1:  # sum over processes of (share of the batch) x (gradient of the share's loss)
            share = len(episodes) / cfg.batch_size
            (value,) = reduce_gradients(params, share, [0.0 if loss is None else float(loss.detach())])
            parts = average_parts(len(episodes), parts)
        else:
            value = None
        # the first NaN/inf loss or gradient stops training here, before the step can spread it into the adapter
        loss_value = float(loss.detach()) if value is None else value
        if not math.isfinite(loss_value) or not _grads_finite(params):
            bar.close()
            method.eval()
            opt.zero_grad(set_to_none=True)
            raise TrainingDiverged(step + 1, "loss" if not math.isfinite(loss_value) else "gradient")
        if cfg.clip > 0:
            accelerator.clip_grad_norm_(params, cfg.clip)
        opt.step()
        losses.append(loss_value)
        parts_log.append(parts)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        stop = callback(step + 1, cfg.steps, losses[-1], parts) is False if callback and w.main else False
        if w.size > 1:
            stop = agree([float(stop)])[0] > 0
        if ckpt and w.main and ((cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0) or stop):
            _save_checkpoint(ckpt, method, opt, step + 1)
        if stop:
            break
    method.eval()
    if ckpt and w.main:
        _save_checkpoint(ckpt, method, opt, start + len(losses))
    seconds = time.time() - t0
    result = TrainResult(start + len(losses), seconds, losses, parts_log, resumed_from=start, processes=w.size)
    if out_dir and w.main:
        (Path(out_dir) / "train_log.json").write_text(json.dumps({"config": asdict(cfg), **asdict(result)}, indent=1))
    barrier()  # the others wait until the main process has written its files
    return result


def _save_checkpoint(path: Path, method: Method, opt, step: int) -> None:
    """adapter + AdamW moments as safetensors, step and hyper-parameters as JSON (no pickle)."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    sd = opt.state_dict()
    tensors = {f"adapter.{k}": v.detach().contiguous().cpu() for k, v in method.state_dict().items()}
    scalars: dict = {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v) and v.ndim > 0:
                tensors[f"optim.{pid}.{name}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{name}"] = float(v)
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": g["params"]} for g in sd["param_groups"]]
    save_file(tensors, str(path / "trainer.safetensors.tmp"))
    (path / "trainer.safetensors.tmp").replace(path / "trainer.safetensors")
    tmp = path / "trainer.json.tmp"
    tmp.write_text(json.dumps({"step": step, "scalars": scalars, "param_groups": groups}))
    tmp.replace(path / "trainer.json")


def _load_checkpoint(path: Path, method: Method, opt) -> int:
    from safetensors.torch import load_file

    meta = json.loads((path / "trainer.json").read_text())
    tensors = load_file(str(path / "trainer.safetensors"))
    method.load_state_dict({k[len("adapter."):]: v for k, v in tensors.items() if k.startswith("adapter.")})
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for k, v in meta["scalars"].items():
        pid, name = k.split(".", 1)
        state.setdefault(int(pid), {})[name] = torch.tensor(v)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return int(meta["step"])
