"""Supervised training with SGD and a cosine schedule, one history entry per epoch.

One loop serves every model kind: the objective (cross-entropy, or cross-entropy
plus gradient alignment) is a callable, and only parameters that require grad are
optimized (a CA-Stream model's frozen backbone and classifier are left alone).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from cambench.data.store import Split
from cambench.training.gradalign import CrossEntropyObjective, gradient_cosine

PROBE_SIZE = 64  # the fixed held-out batch of grad_cosine: the first test images


@dataclass
class TrainConfig:
    """The training hyperparameters of a model's config entry."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    hflip: bool = True
    seed: int = 0

    @classmethod
    def from_model_config(cls, model_config: dict[str, Any]) -> TrainConfig:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in model_config.items() if k in names})


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


def train_model(
    model: nn.Module,
    train: Split,
    test: Split,
    config: TrainConfig,
    device: torch.device,
    progress: bool = True,
    objective: Callable | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place; return the per-epoch history.

    ``objective(model, images, labels) -> (loss, logits, parts)`` defaults to
    cross-entropy; ``parts`` holds ``ce`` and, where present, ``reg``. Per epoch the
    history records ``train_loss``, ``train_ce``, ``train_reg`` (where present),
    ``train_acc``, ``test_acc``, ``lr``, ``seconds`` (the training steps only) and
    ``grad_cosine``: the mean cosine between the standard and guided input gradients
    of the first ``PROBE_SIZE`` test images and their labels (eval mode).

    Batches are drawn by a generator seeded from ``config.seed``, so a CPU run is
    bit-reproducible. Images stay uint8 until the batch is on the device.
    """
    objective = objective or CrossEntropyObjective()
    check = getattr(objective, "check", None)
    if check is not None:
        check(model)  # fail before the first step, not after an epoch
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    probe_images = test.float_images(slice(0, PROBE_SIZE)).to(device)
    probe_labels = test.labels[:PROBE_SIZE].to(device)
    optimizer = torch.optim.SGD(
        params,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.momentum > 0,
    )
    steps_per_epoch = -(-len(train) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, config.epochs * steps_per_epoch
    )
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(train), generator=generator)
        flips = torch.rand(len(train), generator=generator) < 0.5
        sums: dict[str, float] = {}
        correct = 0
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch}/{config.epochs}",
            disable=not progress,
            leave=False,
        )
        for step in bar:
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            images = train.images[idx].to(device).float().div_(255.0)
            labels = train.labels[idx].to(device)
            if config.hflip:
                flip = flips[idx].to(device).view(-1, 1, 1, 1)
                images = torch.where(flip, images.flip(3), images)
            loss, logits, parts = objective(model, images, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            for key, value in {"loss": loss, **parts}.items():
                sums[key] = sums.get(key, 0.0) + value.item() * len(idx)
            correct += int((logits.argmax(1) == labels).sum())
            bar.set_postfix(loss=f"{loss.item():.3f}")
        seconds = time.perf_counter() - start
        entry = {"epoch": epoch, **{f"train_{k}": v / len(train) for k, v in sums.items()}}
        entry.update(
            train_acc=correct / len(train),
            test_acc=evaluate_accuracy(model, test, device),
            grad_cosine=gradient_cosine(model, probe_images, probe_labels),
            lr=optimizer.param_groups[0]["lr"],
            seconds=seconds,
        )
        history.append(entry)
        if progress:
            tqdm.write(
                f"epoch {epoch}/{config.epochs}: loss {entry['train_loss']:.4f} "
                f"train acc {entry['train_acc']:.3f} test acc {entry['test_acc']:.3f} ({seconds:.1f} s)"
            )
    model.eval()
    return history
