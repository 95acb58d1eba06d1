"""Data-parallel training on one node: one process per GPU, launched through torchrun.

A model's ``gpus: N`` (a training key, default 1) asks for N processes. ``cambench
train`` then runs itself again under ``python -m torch.distributed.run --standalone
--nproc_per_node N`` (:func:`run_torchrun`) and waits for it; each worker joins the
process group with :func:`process_group` (NCCL on ``cuda:LOCAL_RANK``, gloo on the
CPU, where N processes serve for testing) and :func:`cambench.training.train_model`
trains data-parallel whenever a process group is initialized. The choices:

- **Same data order as one process.** Every rank seeds the batch generator alike, so
  all ranks draw the single-process permutation and augmentation parameters; each
  takes its part of every global batch of ``batch_size`` (:func:`batch_part`, N
  near-equal contiguous parts: ``batch_size / N`` each, which must divide). The global
  batches are exactly those of a one-process run: this is DistributedSampler's
  sharding, without changing the seeded order.
- **An explicit gradient all-reduce, no DistributedDataParallel.** After backward
  each rank's gradients (of its own mean loss) are weighted by its share of the
  global batch and summed over the ranks in one all-reduce (:func:`sum_gradients`):
  the gradient of the global batch's mean loss, as one process computes it, also for
  an uneven (or, on a rank, empty) last batch. Why not DDP: the gradient-aligned
  objective takes input gradients with ``torch.autograd.grad(create_graph=True)``
  inside the step, and DDP's documentation says it does not work with
  ``torch.autograd.grad``; it gave the right gradients for this objective in a
  check (gloo, 2 processes), but gradient penalties are known to get silently
  wrong ones in other models (pytorch/pytorch#47562). DDP would also average
  equally over ranks (wrong for an uneven last batch) and needs every rank to run
  every training forward (not so for a rank's empty part). Reducing after
  ``backward`` is exact for any objective, keeps the model unwrapped (state-dict
  keys, hooks and evaluation untouched) and costs one collective per step, without
  overlapping communication and backward, which is fine at these model sizes.
- **Batch norm per rank.** Each rank normalizes with the statistics of its own
  ``batch_size / N`` images, as DDP does without SyncBatchNorm (the usual ImageNet
  recipe). SyncBatchNorm is not used: it runs on CUDA only (CPU tests could not check
  it) and its hand-written backward, with collectives inside, is not built for the
  double backpropagation of gradient alignment. A model with trained batch norm thus
  trains slightly differently with N processes than with one; a model without it (or
  with frozen statistics: CA-Stream's backbone) trains the same up to float
  rounding. The running statistics kept are rank 0's: they, and the weights, are
  copied to every rank after each epoch (:func:`broadcast_from_main`), like DDP's
  ``broadcast_buffers``, so the replicas never drift apart.
- **Rank 0 evaluates and writes** (history, checkpoint, resume file); the others wait
  for its epoch entry (:func:`broadcast_object`). Every rank reads the resume file.
- **Own random streams per rank** for dropout and stochastic depth: each rank seeds
  torch's global generator from ``(seed, epoch, rank)`` at every epoch
  (:func:`rank_seed`), so ranks do not repeat each other's masks and a resumed run
  draws the same ones.

Each process reads its part of every batch from the split files itself (lazily, see
:mod:`cambench.data.store`; ``mem_mb`` scales with N in the workflow).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

# Rank 0 evaluates the test split alone while the others wait in a collective.
TIMEOUT = timedelta(hours=1)


@dataclass(frozen=True)
class World:
    """This process's place in the training job: ``rank`` of ``size`` processes."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 evaluates and writes every output."""
        return self.rank == 0


def current_world() -> World:
    """The initialized process group's rank and size, or a single process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


# --------------------------------------------------------------------------- launching


def launched_by_torchrun() -> bool:
    """Whether this process is a torchrun worker (torchrun sets these variables)."""
    return all(key in os.environ for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))


def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    """``python -m cambench <args>`` as ``nproc`` torchrun workers on this node (the
    torchrun of this interpreter: no PATH lookup)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "cambench",
        *args,
    ]


def run_torchrun(nproc: int, args: list[str], threads: int) -> int:
    """Run :func:`torchrun_command` with ``threads`` CPU threads per worker; return its
    exit status. A SIGTERM sent to this process (a scheduler stopping the job) is
    passed on to torchrun, which stops its workers."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(torchrun_command(nproc, args), env=env)
    forward = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: proc.terminate()) if forward else None
    try:
        return proc.wait()
    finally:
        if forward and previous is not None:
            signal.signal(signal.SIGTERM, previous)


def check_devices(device: torch.device, nproc: int) -> None:
    """ValueError, before any process starts, when ``nproc`` GPUs cannot be used."""
    if device.type != "cuda":
        return
    if device.index is not None:
        raise ValueError(
            f"device {str(device)!r} names one GPU; with {nproc} processes each uses its "
            f"own (cuda:0..{nproc - 1} of the visible ones): pass --device cuda or auto"
        )
    visible = torch.cuda.device_count()
    if visible < nproc:
        raise ValueError(f"{nproc} processes need {nproc} GPUs, {visible} are visible")


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Join this torchrun worker's process group and yield its device (``cuda`` →
    ``cuda:LOCAL_RANK``); the group is destroyed on exit."""
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=device)
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    try:
        yield device
    finally:
        dist.destroy_process_group()


# --------------------------------------------------------------------------- training


def batch_part(size: int, world: World) -> slice:
    """This rank's part of a global batch of ``size`` images: the ``rank``-th of
    ``world.size`` contiguous parts whose sizes differ by at most one (as
    ``torch.tensor_split``); a part of a small last batch can be empty."""
    base, extra = divmod(size, world.size)
    start = world.rank * base + min(world.rank, extra)
    return slice(start, start + base + (world.rank < extra))


def sum_gradients(params: list[nn.Parameter], weight: float) -> None:
    """Replace every rank's gradients by the sum over ranks of ``weight`` × its own.

    With ``weight`` = the rank's share of the global batch this is the gradient of the
    global batch's mean loss. One all-reduce of one flat buffer. A parameter without a
    gradient on every rank keeps none, as in one process (the optimizer skips it).
    """
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    present = torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)
    flat = torch.cat([g.reshape(-1) * weight for g in grads] + [present.to(grads[0].dtype)])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(p.dtype)
        offset += n
    for p, count in zip(params, flat[offset:].tolist(), strict=True):
        if count == 0:
            p.grad = None


def broadcast_from_main(model: nn.Module) -> None:
    """Copy rank 0's parameters and buffers (batch-norm statistics) to every rank."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a picklable object)."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait until every rank gets here."""
    dist.barrier()


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of a rank's global torch generator in ``epoch`` (see the module doc)."""
    digest = hashlib.sha256(f"{seed}/{epoch}/{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
