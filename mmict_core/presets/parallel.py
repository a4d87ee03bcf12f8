"""Data parallelism for preset runs under ``accelerate launch`` (several processes, one GPU each).

The trainer (:func:`mmict_core.train.train`) builds its episodes deterministically from the step
number and prepares only the optimiser with accelerate; it neither splits the batch nor averages
gradients.  So that N processes train one model and not N copies, :func:`data_parallel` makes each
process compute the loss on its share of every batch (episodes ``rank::N``) and averages the
adapter's gradients over the processes (one all-reduce per step, after the backward pass and before
the trainer clips them).  With one process it changes nothing.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

from .schema import PresetError


def world() -> tuple[int, int, int]:
    """(rank, number of processes, local rank); (0, 1, 0) when not launched by accelerate / torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, 0
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # CPU processes: gloo (a test set-up)
    return state.process_index, state.num_processes, state.local_process_index


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """The main process runs the block first (e.g. writes fixture files), then the others."""
    if world()[1] == 1:
        yield
        return
    from accelerate import PartialState

    world()  # initialises the shared state
    with PartialState().main_process_first():
        yield


@contextlib.contextmanager
def data_parallel(method, batch_size: int) -> Iterator[None]:
    """While active, ``method.loss`` works on this process's share of each batch and the gradients
    of its trainable parameters are averaged over all processes."""
    rank, size, _ = world()
    if size == 1:
        yield
        return
    if batch_size % size:
        raise PresetError(f"train batch_size x grad_accum = {batch_size} episodes per step cannot be split over "
                          f"{size} processes; make it a multiple of {size}")
    import torch
    import torch.distributed as dist

    params = method.trainable_parameters()
    whole_loss = method.loss
    pending = set()

    def share_loss(episodes, loss_on: str = "query"):
        loss, parts = whole_loss(list(episodes)[rank::size], loss_on=loss_on)
        # every parameter in the graph, so that each process's backward reaches the all-reduce below
        return loss + 0.0 * sum(p.sum() for p in params), parts

    def on_grad(p) -> None:
        pending.discard(id(p))
        if pending:
            return
        grads = [q.grad for q in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= size
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))
        pending.update(id(q) for q in params)  # ready for the next step

    pending.update(id(p) for p in params)
    handles = [p.register_post_accumulate_grad_hook(on_grad) for p in params]
    method.loss = share_loss
    try:
        yield
    finally:
        del method.loss
        for h in handles:
            h.remove()
