"""Supervised training, one history entry per epoch, resumable after every epoch.

One loop serves every model kind: the objective (cross-entropy, or cross-entropy
plus gradient alignment) is a callable, and only parameters that require grad are
optimized (a CA-Stream model's frozen backbone and classifier are left alone).

Recipe (:class:`TrainConfig`, the training keys of a model's config entry):

- optimizer ``sgd`` (momentum; ``nesterov`` unset means Nesterov when
  ``momentum > 0``, cambench's historical default) or ``adamw`` (``momentum`` and
  ``nesterov`` unused; a typical ``lr`` is 1e-3); ``weight_decay`` applies to every
  trained parameter;
- learning rate set before every optimizer step from the global step ``s``: a linear
  warmup over ``warmup_epochs`` (the factor rises as ``(s + 1) / warmup_steps``), times
  ``cosine`` (from ``lr`` after the warmup to 0 at the end) or ``step`` (multiplied by
  ``gamma`` at each epoch of ``milestones``, or, without milestones, every
  ``step_size`` epochs, counted from the start: epoch ``e`` (0-based) trains at
  ``gamma ** #{m ∈ milestones : m ≤ e}``, like PyTorch's ``MultiStepLR`` stepped per
  epoch);
- the CA-Stream paper's released recipe (ftorres11/CA_Stream) is plain momentum SGD:
  ``optimizer: sgd, lr: 0.1, momentum: 0.9, nesterov: false, weight_decay: 1e-4,
  schedule: step, milestones: [30, 60, 90], gamma: 0.1`` (it trains in fp16 with a
  gradient scaler; cambench's CUDA ``amp`` is bf16, which needs no scaler);
- ``label_smoothing`` of the cross-entropy;
- on CUDA only: bf16 mixed precision (``amp``, autocast around the forward and the
  objective; no loss scaling is needed for bf16) and ``channels_last`` memory format,
  both on by default there and ignored on the CPU (so CPU runs stay bit-reproducible).

Augmentation: :func:`cambench.data.augment.augment_batch` on the device, configured
by the dataset's ``augment`` mapping (the train command gets it resolved with the
dataset's defaults). ``train_model(augment=None)`` keeps the historical behaviour:
horizontal flips only. A model's ``hflip`` key, when given, overrides the augment
mapping's ``hflip`` (backward compatible with configs that set it per model).

Data: the splits are read lazily from their HDF5 files (:mod:`cambench.data.store`):
each shuffled batch's uint8 images are read from the file by a background thread
(:class:`Prefetch`, :data:`PREFETCH_BATCHES` batches ahead) while the current batch
trains, then moved to the device and converted there; no copy of the split is held
in memory. The batch order and the augmentation draws are the main thread's, as
without prefetching, so the weights are the same bit for bit. There is no
DataLoader, so no worker processes: ``--threads`` only sets torch's intra-op threads.

Reproducibility and resumption: batches and augmentations are drawn from one
generator seeded from ``seed``, so a CPU run is bit-reproducible. With
``resume_path``, after every epoch the loop atomically writes the model, optimizer
and generator states, the global torch RNG state (dropout, stochastic depth), the
global step (the schedule is a function of it) and the history; a later call with
the same setup (configs, augmentation, objective, data and initial weights — a
fingerprint is stored) continues after the last finished epoch and ends with the
same weights, bit for bit on the CPU, as an uninterrupted run. A resume file of
another setup is ignored (and replaced after the first epoch). The caller deletes
the file once it has saved the trained model (``cambench train`` does).

Several processes (``gpus: N``, launched by torchrun): when a process group is
initialized the loop trains data-parallel, each rank on its part of every global
batch, with the gradients summed over the ranks after backward; rank 0 evaluates and
writes the resume file. The choices (data order, no DDP wrapper, batch norm, random
streams) are in :mod:`cambench.training.distributed`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from cambench.atomic import atomic_output
from cambench.data.augment import apply_augment, augment_batch, check_augment, sample_augment
from cambench.data.store import Split
from cambench.training import distributed
from cambench.training.gradalign import CrossEntropyObjective, gradient_cosine

PROBE_SIZE = 64  # the fixed held-out batch of grad_cosine: the first test images
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step")
RESUME_FORMAT = 1
PREFETCH_BATCHES = 2  # batches read ahead of the one training


class TrainConfigError(ValueError):
    """A bad training hyperparameter; ``key`` names it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass
class TrainConfig:
    """The training hyperparameters of a model's config entry (see the module doc).

    ``hflip``: None follows the augmentation config, True/False overrides its flip.
    ``amp`` / ``channels_last``: None = on when training on CUDA; always off on CPU.
    ``gpus``: training processes (one per GPU, data-parallel, see
    :mod:`cambench.training.distributed`); ``batch_size`` is the global batch and must
    be a multiple of it.
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool | None = None
    schedule: str = "cosine"
    step_size: int = 30
    milestones: list[int] | None = None
    gamma: float = 0.1
    warmup_epochs: float = 0
    label_smoothing: float = 0.0
    hflip: bool | None = None
    amp: bool | None = None
    channels_last: bool | None = None
    seed: int = 0
    gpus: int = 1

    def __post_init__(self) -> None:
        def need(ok: bool, key: str, problem: str) -> None:
            if not ok:
                raise TrainConfigError(key, f"{problem}, got {getattr(self, key)!r}")

        def number(key: str) -> bool:
            value = getattr(self, key)
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        for key in ("epochs", "batch_size", "step_size", "seed", "gpus"):
            value = getattr(self, key)
            need(isinstance(value, int) and not isinstance(value, bool), key, "must be an integer")
        need(self.epochs >= 1, "epochs", "must be >= 1")
        need(self.batch_size >= 1, "batch_size", "must be >= 1")
        need(self.step_size >= 1, "step_size", "must be >= 1")
        need(self.seed >= 0, "seed", "must be >= 0")
        need(self.gpus >= 1, "gpus", "must be >= 1")
        need(
            self.batch_size % self.gpus == 0,
            "batch_size",
            f"must be a multiple of gpus ({self.gpus}): it is the global batch, split "
            "evenly over the processes",
        )
        need(self.optimizer in OPTIMIZERS, "optimizer", f"must be one of {', '.join(OPTIMIZERS)}")
        need(self.schedule in SCHEDULES, "schedule", f"must be one of {', '.join(SCHEDULES)}")
        need(number("lr") and self.lr > 0, "lr", "must be a number > 0")
        for key in ("momentum", "weight_decay", "gamma", "warmup_epochs"):
            need(number(key) and getattr(self, key) >= 0, key, "must be a number >= 0")
        need(
            self.warmup_epochs <= self.epochs, "warmup_epochs", f"must be <= epochs ({self.epochs})"
        )
        need(
            number("label_smoothing") and 0 <= self.label_smoothing < 1,
            "label_smoothing",
            "must be a number in [0, 1)",
        )
        for key in ("hflip", "amp", "channels_last", "nesterov"):
            need(getattr(self, key) in (None, True, False), key, "must be true or false")
        need(
            not (self.nesterov and (self.optimizer != "sgd" or self.momentum == 0)),
            "nesterov",
            "needs optimizer sgd with momentum > 0",
        )
        if self.milestones is not None:
            epochs = self.milestones
            need(
                isinstance(epochs, (list, tuple))
                and all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in epochs)
                and list(epochs) == sorted(set(epochs)),
                "milestones",
                "must be a list of increasing epochs >= 1",
            )
            need(self.schedule == "step", "milestones", "only the step schedule uses them")

    @classmethod
    def from_model_config(cls, model_config: dict[str, Any]) -> TrainConfig:
        """The training keys of a model config (others are ignored); TrainConfigError
        names a bad one."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in model_config.items() if k in names})


def lr_factor(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based) over ``config.lr``."""
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    warm = (step + 1) / warmup_steps if step < warmup_steps else 1.0
    if config.schedule == "step":
        epoch = step // steps_per_epoch
        if config.milestones is not None:
            return warm * config.gamma ** sum(m <= epoch for m in config.milestones)
        return warm * config.gamma ** (epoch // config.step_size)
    total = config.epochs * steps_per_epoch
    progress = min(max(step - warmup_steps, 0) / max(total - warmup_steps, 1), 1.0)
    return warm * 0.5 * (1.0 + math.cos(math.pi * progress))


def uses_nesterov(config: TrainConfig) -> bool:
    """Whether SGD uses Nesterov momentum: ``nesterov``, or when unset ``momentum > 0``."""
    if config.optimizer != "sgd":
        return False
    return config.momentum > 0 if config.nesterov is None else config.nesterov


def build_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (plain or Nesterov momentum) or AdamW, from ``config``."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=uses_nesterov(config),
    )


def optimizer_record(config: TrainConfig) -> dict[str, Any]:
    """The optimizer and schedule a run used, with defaults resolved, for its history
    (so a result says how it was trained, even when the config left keys out)."""
    record: dict[str, Any] = {
        "optimizer": config.optimizer,
        "lr": config.lr,
        "weight_decay": config.weight_decay,
        "schedule": config.schedule,
        "warmup_epochs": config.warmup_epochs,
    }
    if config.optimizer == "sgd":
        record.update(momentum=config.momentum, nesterov=uses_nesterov(config))
    if config.schedule == "step":
        milestones = config.milestones
        if milestones is None:
            milestones = list(range(config.step_size, config.epochs, config.step_size))
        record.update(milestones=list(milestones), gamma=config.gamma)
    return record


def effective_augment(config: TrainConfig, augment: dict[str, Any] | None) -> dict[str, Any]:
    """The augmentation the loop applies: ``augment`` (None: hflip only) with the
    model's ``hflip`` override, completed and checked by :func:`check_augment`."""
    out = {"hflip": True} if augment is None else dict(augment)
    if config.hflip is not None:
        out["hflip"] = config.hflip
    return check_augment(out)


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module, split: Split, device: torch.device, batch_size: int = 512
) -> float:
    """Top-1 accuracy of ``model`` on ``split`` (eval mode, restored afterwards)."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(split), batch_size):
        images = split.float_images(slice(start, start + batch_size)).to(device)
        labels = split.labels[start : start + batch_size].to(device)
        correct += int((model(images).argmax(1) == labels).sum())
    model.train(was_training)
    return correct / max(len(split), 1)


# --------------------------------------------------------------------------- resuming


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def state_digest(model: nn.Module) -> str:
    """SHA-256 of a model's state dict (names, shapes and bits)."""
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(f"{key}{tuple(value.shape)}{value.dtype}".encode())
        digest.update(_tensor_bytes(value))
    return digest.hexdigest()


def split_digest(split: Split, samples: int = 256) -> str:
    """A cheap fingerprint of a split: shapes, every label, and ~``samples`` images."""
    digest = hashlib.sha256(f"{tuple(split.images.shape)}{split.class_names}".encode())
    digest.update(_tensor_bytes(split.labels))
    digest.update(_tensor_bytes(split.images[:: max(1, len(split) // samples)]))
    return digest.hexdigest()


def _objective_id(objective: Callable) -> str:
    if dataclasses.is_dataclass(objective):
        return f"{type(objective).__name__}{dataclasses.asdict(objective)}"
    return type(objective).__name__


_UNSET_NOT_FINGERPRINTED = ("nesterov", "milestones")


def resume_fingerprint(
    model: nn.Module,
    train: Split,
    test: Split,
    config: TrainConfig,
    augment: dict[str, Any],
    objective: Callable,
    device: torch.device,
) -> str:
    """What a resume file must match: configs, augmentation, objective, device type,
    data and the initial weights."""
    settings = dataclasses.asdict(config)
    for name in _UNSET_NOT_FINGERPRINTED:  # resume files written before these keys stay valid
        if settings[name] is None:
            del settings[name]
    key = {
        "config": settings,
        "augment": augment,
        "objective": _objective_id(objective),
        "device": device.type,
        "train": split_digest(train),
        "test": split_digest(test),
        "model": state_digest(model),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _tree_digest(obj: Any, digest: Any = None) -> str:
    """SHA-256 of a nested structure of dicts, lists, tuples, tensors and plain values
    (a resume state): every tensor's dtype, shape and bits, every other value's repr."""
    digest = digest if digest is not None else hashlib.sha256()
    if isinstance(obj, torch.Tensor):
        digest.update(f"T{obj.dtype}{tuple(obj.shape)}".encode())
        digest.update(obj.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        digest.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=repr):
            digest.update(repr(key).encode())
            _tree_digest(obj[key], digest)
    elif isinstance(obj, (list, tuple)):
        digest.update(f"{type(obj).__name__}{len(obj)}".encode())
        for item in obj:
            _tree_digest(item, digest)
    else:
        digest.update(repr(obj).encode())
    return digest.hexdigest()


def _read_resume(path: Path, fingerprint: str, verbose: bool = True) -> dict[str, Any] | None:
    say = print if verbose else (lambda *_: None)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged file: start over
        say(f"ignoring unreadable resume file {path} ({err})")
        return None
    recorded = state.pop("content_sha256", None) if isinstance(state, dict) else None
    if recorded is None or recorded != _tree_digest(state):
        say(f"ignoring damaged resume file {path} (checksum missing or wrong)")
        return None
    if state.get("format") != RESUME_FORMAT or state.get("fingerprint") != fingerprint:
        say(f"ignoring resume file {path}: it belongs to another training setup")
        return None
    say(f"resuming from {path} after epoch {state['epoch']}")
    return state


def _write_resume(path: Path, state: dict[str, Any]) -> None:
    """Write the resume state with its content digest (checked by :func:`_read_resume`);
    a full disk is a ValueError naming ``path`` (:func:`cambench.atomic.atomic_output`)."""
    state = {**state, "content_sha256": _tree_digest(state)}
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


# --------------------------------------------------------------------------- the loop


class Prefetch:
    """``with Prefetch(load, keys) as values:`` iterates ``load(key)`` for ``keys`` in
    order, computed by one background thread up to ``depth`` keys ahead (reading the
    next batches from the file while the current one trains). An exception of
    ``load`` is raised where its value would have been; leaving the block early
    cancels what was not started and waits for the thread."""

    def __init__(self, load: Callable[[Any], Any], keys: Iterable, depth: int = PREFETCH_BATCHES):
        self.load = load
        self.keys = iter(keys)
        self.depth = max(1, int(depth))
        self.pending: deque[Future] = deque()
        self.pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> Iterator:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="cambench-prefetch")
        return self._values()

    def _fill(self) -> None:
        while len(self.pending) < self.depth:
            key = next(self.keys, _END)
            if key is _END:
                return
            self.pending.append(self.pool.submit(self.load, key))

    def _values(self) -> Iterator:
        self._fill()
        while self.pending:
            future = self.pending.popleft()
            self._fill()
            yield future.result()

    def __exit__(self, *exc: object) -> None:
        for future in self.pending:
            future.cancel()
        self.pending.clear()
        self.pool.shutdown(wait=True)


_END = object()


def _augment_part(
    images: torch.Tensor,
    part: slice,
    batch: int,
    augment: dict[str, Any],
    generator: torch.Generator,
) -> torch.Tensor:
    """Augment a rank's ``part`` of a global batch of ``batch`` images.

    The parameters are drawn for the whole global batch, so that every rank's
    generator stays in step with a one-process run's, and only this part's are
    applied; with one process this is :func:`augment_batch` of the whole batch.
    """
    if images.shape[0] == batch:
        return augment_batch(images, augment, generator)
    params = sample_augment(batch, images.shape[2], images.shape[3], augment, generator)
    if images.shape[0] == 0:
        return images
    return apply_augment(images, {k: v[part] for k, v in params.items()}, augment)


def train_model(
    model: nn.Module,
    train: Split,
    test: Split,
    config: TrainConfig,
    device: torch.device,
    progress: bool = True,
    objective: Callable | None = None,
    augment: dict[str, Any] | None = None,
    resume_path: str | os.PathLike | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place; return the per-epoch history.

    ``objective(model, images, labels) -> (loss, logits, parts)`` defaults to
    cross-entropy with ``config.label_smoothing`` (an objective given must have the
    same ``label_smoothing``); ``parts`` holds ``ce`` and, where present, ``reg``. Per
    epoch the history records ``epoch``, ``train_loss``, ``train_ce``, ``train_reg``
    (where present), ``train_acc``, ``test_acc``, ``lr`` (after the epoch's last
    step), ``seconds`` (the training steps only) and ``grad_cosine``: the mean cosine
    between the standard and guided input gradients of the first ``PROBE_SIZE`` test
    images and their labels (eval mode; NaN for models guided backpropagation does
    not apply to).

    ``augment``: the dataset's augment mapping (see :func:`effective_augment`).
    ``resume_path``: where to keep the per-epoch resume state (see the module doc).
    Images stay uint8 until the batch is on the device.

    Data-parallel when a process group of ``config.gpus`` processes is initialized
    (every rank calls this with the same arguments and its own ``device``); every rank
    returns rank 0's history and ends with the same weights.
    """
    world = distributed.current_world()
    if world.size != config.gpus:
        raise ValueError(
            f"gpus: the training config asks for {config.gpus} process(es), this run has "
            f"{world.size} (`cambench train` launches torchrun with gpus processes)"
        )
    objective = objective or CrossEntropyObjective(label_smoothing=config.label_smoothing)
    smoothing = getattr(objective, "label_smoothing", config.label_smoothing)
    if smoothing != config.label_smoothing:
        raise ValueError(
            f"the objective's label_smoothing ({smoothing}) differs from the training "
            f"config's ({config.label_smoothing})"
        )
    check = getattr(objective, "check", None)
    if check is not None:
        check(model)  # fail before the first step, not after an epoch
    augment = effective_augment(config, augment)
    on_cuda = device.type == "cuda"
    use_amp = on_cuda and config.amp is not False
    channels_last = on_cuda and config.channels_last is not False
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    fingerprint = (
        resume_fingerprint(model, train, test, config, augment, objective, device)
        if resume_path is not None
        else ""
    )
    model.to(device=device, memory_format=memory_format)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    probe_images = test.float_images(slice(0, PROBE_SIZE)).to(device)
    probe_labels = test.labels[:PROBE_SIZE].to(device)
    optimizer = build_optimizer(params, config)
    steps_per_epoch = -(-len(train) // config.batch_size)
    # the same seed on every rank: the same batches and augmentations as one process
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    first_epoch, step = 1, 0
    resume = Path(resume_path) if resume_path is not None else None
    state = _read_resume(resume, fingerprint, world.is_main) if resume is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if on_cuda and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        history = list(state["history"])
        first_epoch, step = int(state["epoch"]) + 1, int(state["step"])
    if world.size > 1:
        distributed.broadcast_from_main(model)  # identical replicas, however initialized
        distributed.barrier()  # every rank has read the resume file before rank 0 rewrites it
    autocast = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
        if use_amp
        else contextlib.nullcontext
    )
    for epoch in range(first_epoch, config.epochs + 1):
        model.train()
        if world.size > 1:  # own dropout masks per rank, the same after a resume
            torch.manual_seed(distributed.rank_seed(config.seed, epoch, world.rank))
        start = time.perf_counter()
        order = torch.randperm(len(train), generator=generator)
        sums: dict[str, float] = {}
        correct = 0
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch}/{config.epochs}",
            # a bar on a terminal only: in a log file, the epoch lines below
            disable=not (progress and world.is_main and sys.stderr.isatty()),
            leave=False,
        )
        batches = [
            order[batch * config.batch_size : (batch + 1) * config.batch_size]
            for batch in range(steps_per_epoch)
        ]
        rank_parts = [distributed.batch_part(len(idx), world) for idx in batches]
        mine_per_batch = [idx[part] for idx, part in zip(batches, rank_parts, strict=True)]
        with Prefetch(train.images.__getitem__, mine_per_batch) as reads:
            for batch, uint8_images in zip(bar, reads, strict=True):
                idx, part = batches[batch], rank_parts[batch]  # part: all of idx on one process
                mine = mine_per_batch[batch]
                images = uint8_images.to(device).float().div_(255.0)
                labels = train.labels[mine].to(device)
                images = _augment_part(images, part, len(idx), augment, generator)
                images = images.contiguous(memory_format=memory_format)
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * lr_factor(config, step, steps_per_epoch)
                optimizer.zero_grad(set_to_none=True)
                if len(mine) > 0:  # a rank's part of a small last batch can be empty
                    with autocast():
                        loss, logits, parts = objective(model, images, labels)
                    loss.backward()
                    for key, value in {"loss": loss, **parts}.items():
                        sums[key] = sums.get(key, 0.0) + value.item() * len(mine)
                    correct += int((logits.argmax(1) == labels).sum())
                    bar.set_postfix(loss=f"{loss.item():.3f}")
                if world.size > 1:  # the gradient of the global batch's mean loss
                    distributed.sum_gradients(params, len(mine) / len(idx))
                optimizer.step()
                step += 1
        seconds = time.perf_counter() - start
        if world.size > 1:
            sums, correct = _sum_over_ranks(sums, correct)
            distributed.broadcast_from_main(model)  # rank 0's batch-norm statistics
        entry: dict[str, float] | None = None
        if world.is_main:
            entry = {"epoch": epoch, **{f"train_{k}": v / len(train) for k, v in sums.items()}}
            entry.update(
                train_acc=correct / len(train),
                test_acc=evaluate_accuracy(model, test, device),
                grad_cosine=gradient_cosine(model, probe_images, probe_labels),
                lr=config.lr * lr_factor(config, step, steps_per_epoch),
                seconds=seconds,
            )
        if world.size > 1:
            entry = distributed.broadcast_object(entry)
        history.append(entry)
        if resume is not None and world.is_main:
            _write_resume(
                resume,
                {
                    "format": RESUME_FORMAT,
                    "fingerprint": fingerprint,
                    "epoch": epoch,
                    "step": step,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(device) if on_cuda else None,
                    "history": history,
                },
            )
        if progress and world.is_main:
            tqdm.write(
                f"epoch {epoch}/{config.epochs}: loss {entry['train_loss']:.4f} "
                f"train acc {entry['train_acc']:.3f} test acc {entry['test_acc']:.3f} ({seconds:.1f} s)"
            )
    model.to(memory_format=torch.contiguous_format)
    model.eval()
    return history


def _sum_over_ranks(sums: dict[str, float], correct: int) -> tuple[dict[str, float], int]:
    """The epoch's loss sums and correct count of all ranks together."""
    total: dict[str, float] = {}
    count = 0
    for rank_sums, rank_correct in distributed.gather_objects((sums, correct)):
        for key, value in rank_sums.items():
            total[key] = total.get(key, 0.0) + value
        count += rank_correct
    return total, count
