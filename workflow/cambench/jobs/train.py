"""The train job: train one model, write its checkpoint and its training history.

With the model's ``gpus: N > 1`` the job runs itself as N torchrun workers
(:mod:`cambench.training.distributed`); each worker runs :func:`train_one`, and rank
0 writes the outputs.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cambench import joblog
from cambench.data.store import Split, read_split
from cambench.models import build_model, read_checkpoint, save_checkpoint
from cambench.models.castream import CAStream
from cambench.runtime import seed_everything
from cambench.table_io import write_json
from cambench.training import (
    CrossEntropyObjective,
    GradAlignObjective,
    TrainConfig,
    distributed,
    optimizer_record,
    train_model,
)
from cambench.training.loop import evaluate_accuracy


@dataclass(frozen=True)
class TrainJob:
    """What one training job reads and writes: the model's name and validated config
    entry, the splits, the outputs, a CA-Stream's base checkpoint (refused for other
    kinds), the augmentation, whether to resume and show progress, and the seed of a
    label permutation (``permute_labels``: the data randomization check's model)."""

    name: str
    model_config: dict[str, Any]
    train_path: str | os.PathLike
    test_path: str | os.PathLike
    out_model: str | os.PathLike
    out_history: str | os.PathLike
    base_path: str | os.PathLike | None
    augment: dict[str, Any] | None
    resume: bool
    progress: bool
    permute_labels: int | None = None  # seed: train on permuted labels (data randomization)


def run(
    job: TrainJob,
    device: torch.device,
    threads: int,
    worker_argv: Callable[[int], list[str]],
) -> None:
    """Train ``job.name`` on the train split.

    ``worker_argv(threads)`` is the command line each torchrun worker runs when the
    model asks for several GPUs (``gpus``).
    """
    kind = job.model_config["kind"]
    if kind == "castream" and not job.base_path:
        raise ValueError("a castream model needs --base, the base model's checkpoint")
    if kind != "castream" and job.base_path:
        raise ValueError(f"--base is only for castream models, not kind {kind!r}")
    gpus = TrainConfig.from_model_config(job.model_config).gpus
    if distributed.launched_by_torchrun():
        with distributed.process_group(device) as rank_device:
            train_one(job, rank_device)
    elif gpus > 1:
        _launch(job.name, device, gpus, threads, worker_argv)
    else:
        train_one(job, device)


def _launch(
    name: str,
    device: torch.device,
    gpus: int,
    threads: int,
    worker_argv: Callable[[int], list[str]],
) -> None:
    """Run this training as ``gpus`` torchrun workers."""
    try:
        distributed.check_devices(device, gpus)
    except ValueError as err:
        raise ValueError(f"config key 'models.{name}.gpus' is {gpus}: {err}") from None
    per_worker = max(1, (threads or torch.get_num_threads()) // gpus)
    argv = worker_argv(per_worker)
    print(f"{name}: {gpus} training processes on {device.type}, {per_worker} thread(s) each")
    print(shlex.join(distributed.torchrun_command(gpus, argv)), flush=True)
    status = distributed.run_torchrun(gpus, argv, per_worker)
    if status != 0:
        raise RuntimeError(
            f"the {gpus} training processes failed (torchrun exit status {status}; their "
            "errors are above)"
        )


def build_trainee(
    model_config: dict[str, Any], base_path: str | os.PathLike | None, num_classes: int
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model to train and the config its checkpoint stores: a fresh model of its
    arch, or a CA-Stream on the frozen base checkpoint (whose config it records)."""
    config = dict(model_config)
    if config["kind"] != "castream":
        return build_model(config, num_classes), config
    base = read_checkpoint(base_path)
    if base.config.get("kind", "baseline") == "castream":
        raise ValueError(f"{base_path}: the base of a castream model cannot be castream")
    config["base_config"] = base.config
    model = CAStream.from_config(base.model, config)
    if model.num_classes != num_classes:
        raise ValueError(
            f"{base_path}: the base model has {model.num_classes} classes, the data {num_classes}"
        )
    return model, config


def permuted_labels(split: Split, seed: int) -> Split:
    """``split`` with its labels shuffled by a seeded permutation (the same images, the
    same class counts, no relation between image and label left to learn)."""
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(int(seed)))
    return dataclasses.replace(split, labels=split.labels[order])


def build_objective(
    config: dict[str, Any], train_config: TrainConfig
) -> CrossEntropyObjective | GradAlignObjective:
    """The training objective of a model's config entry: cross-entropy, plus the
    gradient-alignment term for a ``gradalign`` model."""
    if config["kind"] == "gradalign":
        return GradAlignObjective(
            lam=float(config.get("lambda", 7.5e-3)),
            distance=config.get("distance", "cosine"),
            label_smoothing=train_config.label_smoothing,
        )
    return CrossEntropyObjective(label_smoothing=train_config.label_smoothing)


def train_one(job: TrainJob, device: torch.device) -> None:
    """Train and save one model; on several processes each calls this, rank 0 writes."""
    name, model_config, augment = job.name, job.model_config, job.augment
    world = distributed.current_world()
    start = (
        joblog.header(
            "train",
            {
                "model": name,
                "config": model_config,
                "augment": augment,
                "device": str(device),
                "processes": world.size,
                **(
                    {"permute_labels": job.permute_labels} if job.permute_labels is not None else {}
                ),
            },
            [
                str(job.train_path),
                str(job.test_path),
                *([str(job.base_path)] if job.base_path else []),
            ],
        )
        if world.is_main
        else time.perf_counter()
    )
    train_config = TrainConfig.from_model_config(model_config)
    seed_everything(train_config.seed)
    train = read_split(job.train_path)
    if job.permute_labels is not None:
        train = permuted_labels(train, job.permute_labels)
    test = read_split(job.test_path)
    num_classes = len(train.class_names)
    model, config = build_trainee(model_config, job.base_path, num_classes)
    objective = build_objective(config, train_config)
    resume_path = Path(f"{job.out_model}.resume.pt") if job.resume else None
    tic = time.perf_counter()
    history = train_model(
        model,
        train,
        test,
        train_config,
        device,
        progress=job.progress,
        objective=objective,
        augment=augment,
        resume_path=resume_path,
    )
    seconds = time.perf_counter() - tic
    if not world.is_main:
        return
    save_checkpoint(job.out_model, model, config, num_classes, train.class_names)
    write_json(
        job.out_history,
        {
            "model": name,
            "kind": model_config["kind"],
            "config": config,
            "augment": augment,
            "optimizer": optimizer_record(train_config),
            "epochs": history,
            "test_acc": history[-1]["test_acc"] if history else float("nan"),
            "num_classes": num_classes,
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "seconds": seconds,
            "device": str(device),
            "processes": world.size,
            "threads": torch.get_num_threads(),
            **(
                {
                    "permute_labels": job.permute_labels,
                    "train_acc": evaluate_accuracy(model, train, device),
                }
                if job.permute_labels is not None
                else {}
            ),
        },
    )
    if resume_path is not None:
        resume_path.unlink(missing_ok=True)  # the outputs are complete
    print(f"{name}: test accuracy {100 * history[-1]['test_acc']:.2f} % in {seconds:.0f} s")
    joblog.footer(start, [str(job.out_model), str(job.out_history)])
