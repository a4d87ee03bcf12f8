"""Data parallelism for the shared trainer (:func:`mmict_core.train.train`) and everything built on it.

Launched by ``torchrun --nproc_per_node N`` or ``accelerate launch --num_processes N`` (one process per
GPU, or N CPU processes with the gloo backend), every process builds the same global batch of
episodes from the step number, takes its slice of it (episodes ``rank::N``), computes the loss on
that slice and back-propagates; the adapter's gradients are then summed over the processes, each
weighted by its share of the batch's episodes (``n_rank / batch_size``; correct also when the batch
does not split evenly), before clipping and the optimiser step.  So N processes take exactly the
steps one process would take on the whole batch, N times faster -- not N independent copies.

Which process is which comes from accelerate's state (``PartialState().process_index`` /
``num_processes`` / ``local_process_index``), or, where accelerate reports a single process, from
an initialised ``torch.distributed`` process group (e.g. one set up by hand with
``init_process_group``).  Without either, everything here is a no-op: one process runs exactly as
before.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, NamedTuple, Sequence, TypeVar

T = TypeVar("T")


class World(NamedTuple):
    """This process's place: ``rank`` (0 = main), ``size`` (number of processes), ``local_rank``
    (index on this machine: the GPU to use)."""

    rank: int
    size: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0


SINGLE = World(0, 1, 0)


def launched() -> bool:
    """True when a launcher (torchrun, accelerate launch) started several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _accelerate_state():
    """accelerate's process state if it has been set up in this process, else None (never creates it)."""
    try:
        from accelerate.state import PartialState
    except ImportError:  # pragma: no cover - accelerate is a dependency
        return None
    return PartialState() if PartialState._shared_state else None


def world() -> World:
    """This process's :class:`World`: accelerate's state when it knows of several processes, else an
    initialised ``torch.distributed`` group, else -- when launched with ``WORLD_SIZE > 1`` -- the state
    accelerate sets up from the launcher's environment (gloo on CPU-only machines, nccl on GPUs);
    :data:`SINGLE` otherwise."""
    import torch

    state = _accelerate_state()
    if state is None and launched():
        from accelerate import PartialState

        state = PartialState(cpu=not torch.cuda.is_available())  # initialises the process group
    if state is not None and state.num_processes > 1:
        return World(state.process_index, state.num_processes, max(state.local_process_index, 0))
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        rank = dist.get_rank()
        return World(rank, dist.get_world_size(), int(os.environ.get("LOCAL_RANK", rank)))
    if launched():
        raise RuntimeError(
            f"launched as one of WORLD_SIZE={os.environ['WORLD_SIZE']} processes, but accelerate set up a single "
            f"process (a CPU-only machine where something created accelerate's state with cpu=False?); refusing "
            f"to train {os.environ['WORLD_SIZE']} independent copies")
    return SINGLE


def is_main() -> bool:
    """True on the process that logs, saves and evaluates (rank 0), and when not distributed."""
    return world().main


def local_device() -> str:
    """This process's device: ``cuda:LOCAL_RANK`` (modulo the visible GPUs) when CUDA is there, else 'cpu'."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{world().local_rank % torch.cuda.device_count()}"


def shard(items: Sequence[T], w: World | None = None) -> list[T]:
    """This process's slice of ``items``: every ``size``-th item from ``rank`` (all of them for one process)."""
    w = w or world()
    return list(items)[w.rank::w.size]


def shard_indices(n: int, w: World) -> range:
    """The positions :func:`shard` takes from a sequence of ``n`` items."""
    return range(w.rank, n, w.size)


def barrier() -> None:
    if world().size > 1:
        import torch.distributed as dist

        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """The main process runs the block first (e.g. writes fixture files), then the others."""
    w = world()
    if w.size == 1:
        yield
        return
    import torch.distributed as dist

    if not w.main:
        dist.barrier()
    yield
    if w.main:
        dist.barrier()


def _comm_device(fallback):
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu") if fallback is None else fallback


def reduce_gradients(params: Sequence, weight: float, values: Sequence[float] = ()) -> list[float]:
    """Replace each parameter's gradient by the sum over processes of ``weight_rank * grad_rank`` (one
    all-reduce); a parameter without a gradient counts as zero and keeps ``grad=None`` only when it has
    none on every process.  ``values`` (e.g. the loss) are reduced the same way; returns them."""
    import torch
    import torch.distributed as dist

    params = list(params)
    dtype = torch.float32
    for p in params:
        if p.grad is not None:
            dtype = torch.promote_types(dtype, p.grad.dtype)
    dev = _comm_device(torch.device("cpu"))
    pieces = [(p.grad.detach().reshape(-1).to(dev, dtype) * weight) if p.grad is not None
              else torch.zeros(p.numel(), dtype=dtype, device=dev) for p in params]
    pieces.append(torch.tensor([float(p.grad is not None) for p in params], dtype=dtype, device=dev))
    pieces.append(torch.tensor([float(v) * weight for v in values], dtype=dtype, device=dev))
    flat = torch.cat(pieces)
    dist.all_reduce(flat)
    sizes = [p.numel() for p in params] + [len(params), len(values)]
    parts = flat.split(sizes)
    has = parts[len(params)]
    for p, g, h in zip(params, parts, has.tolist()):
        if h == 0:
            p.grad = None
            continue
        g = g.view_as(p).to(p.device, p.grad.dtype if p.grad is not None else p.dtype)
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)
    return parts[-1].tolist()


def broadcast_parameters(params: Sequence, src: int = 0) -> None:
    """Copy the values of ``params`` from process ``src`` to all the others (one broadcast)."""
    import torch
    import torch.distributed as dist

    params = list(params)
    if not params:
        return
    dev = _comm_device(torch.device("cpu"))
    dtype = params[0].dtype
    for p in params:
        dtype = torch.promote_types(dtype, p.dtype)
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1).to(dev, dtype) for p in params])
        dist.broadcast(flat, src)
        for p, part in zip(params, flat.split([p.numel() for p in params])):
            p.copy_(part.view_as(p).to(p.device, p.dtype))


def agree(values: Sequence[float], op: str = "max") -> list[float]:
    """Element-wise max (or min, sum) of ``values`` over the processes."""
    import torch
    import torch.distributed as dist

    ops = {"max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN, "sum": dist.ReduceOp.SUM}
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device(None))
    dist.all_reduce(t, ops[op])
    return t.tolist()


def average_parts(n_local: int, parts: dict) -> dict:
    """The loss parts (name -> float) averaged over the processes, weighted by their episodes."""
    import torch.distributed as dist

    gathered: list = [None] * world().size
    dist.all_gather_object(gathered, (n_local, parts))
    total: dict[str, float] = {}
    weight: dict[str, float] = {}
    for n, ps in gathered:
        for k, v in ps.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                total[k] = total.get(k, 0.0) + n * float(v)
                weight[k] = weight.get(k, 0.0) + n
    return {k: total[k] / weight[k] for k in total if weight[k] > 0}


@contextlib.contextmanager
def data_parallel(method, batch_size: int | None = None) -> Iterator[None]:
    """For training loops other than :func:`mmict_core.train.train` (which shards by itself): while
    active, ``method.loss`` works on this process's share of the episodes it is given, and after each
    backward pass the gradients of its trainable parameters are combined over the processes (weighted
    by each process's share).  With one process it changes nothing.  ``batch_size`` is accepted for
    compatibility and not needed."""
    w = world()
    if w.size == 1:
        yield
        return
    params = method.trainable_parameters()
    whole_loss = method.loss
    weight = [0.0]
    pending: set[int] = set()

    def share_loss(episodes, loss_on: str = "query"):
        episodes = list(episodes)
        mine = shard(episodes, w)
        weight[0] = len(mine) / max(len(episodes), 1)
        # every parameter in the graph, so that each process's backward reaches the all-reduce below
        keep = 0.0 * sum(p.sum() for p in params)
        if not mine:
            return keep, {}
        loss, parts = whole_loss(mine, loss_on=loss_on)
        return loss + keep, parts

    def on_grad(p) -> None:
        pending.discard(id(p))
        if pending:
            return
        reduce_gradients(params, weight[0])
        pending.update(id(q) for q in params)  # ready for the next step

    pending.update(id(p) for p in params)
    handles = [p.register_post_accumulate_grad_hook(on_grad) for p in params]
    method.loss = share_loss
    method._mmict_data_parallel = True
    try:
        yield
    finally:
        del method.loss
        del method._mmict_data_parallel
        for h in handles:
            h.remove()
