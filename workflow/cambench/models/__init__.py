"""Model construction and checkpoints.

Architectures (``arch`` of a model config): ``resnet_small`` (:class:`SmallResNet`, a
CIFAR-style ResNet for small images; ``width``/``blocks``) and the torchvision
ImageNet backbones of :mod:`cambench.models.torchvision_models` (``resnet18``,
``resnet34``, ``resnet50``, ``mobilenet_v2``, ``vgg16_bn``, ``convnext_tiny``), each with
its input normalization as its first module and a ``default_target_layer``.
``weights`` optionally initializes a model from torchvision's pretrained weights
(a name such as ``IMAGENET1K_V1``, read from the local torch hub cache only) or from
a local state dict (a path).

A checkpoint is a ``torch.save``d dict holding the weights and the model config that
built them, so :func:`load_checkpoint` needs nothing but the file (it rebuilds the
architecture *without* the config's ``weights``, then loads the stored state dict).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cambench import __version__
from cambench.atomic import atomic_output
from cambench.models.castream import POSITIONS, CAStream
from cambench.models.small_resnet import SmallResNet
from cambench.models.torchvision_models import (
    ARCHS as TORCHVISION_ARCHS,
)
from cambench.models.torchvision_models import (
    build_torchvision,
    is_weights_name,
    load_weights,
    pretrained_weights_path,
    weights_file,
)

ARCHITECTURES = ("resnet_small", *TORCHVISION_ARCHS)
KINDS = ("baseline", "castream", "gradalign")
# Archs a CA-Stream can run beside (see cambench.models.castream.stream_layout), and archs
# whose head is global average pooling → ``fc`` (what the ``cam`` method needs).
CASTREAM_BASE_ARCHS = (
    "resnet_small",
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v2",
    "convnext_tiny",
)
GAP_FC_ARCHS = ("resnet_small", "resnet18", "resnet34", "resnet50")

_SMALL_RESNET_ONLY = ("width", "blocks")

__all__ = [
    "ARCHITECTURES",
    "CASTREAM_BASE_ARCHS",
    "GAP_FC_ARCHS",
    "KINDS",
    "build_model",
    "check_model_config",
    "file_sha256",
    "load_checkpoint",
    "save_checkpoint",
    "weights_file",
]


def check_model_config(name: str, model_config: dict[str, Any]) -> None:
    """ValueError naming ``models.<name>.<key>`` for model values that cannot work:
    the training keys (:class:`cambench.training.TrainConfig`), ``width``/``blocks``
    on another arch than ``resnet_small``, and a ``weights`` name torchvision does not
    have for the arch (whether the file is in the local cache is checked when the
    model is built, on the machine that trains it). Which keys each kind takes, and
    CA-Stream's base, are checked by :func:`cambench.specs.parse_config`.
    """
    from cambench.training.loop import TrainConfig, TrainConfigError

    try:
        TrainConfig.from_model_config(model_config)
    except TrainConfigError as err:
        raise ValueError(f"config key 'models.{name}.{err.key}': {err.problem}") from None
    if model_config.get("kind") == "castream":
        return
    arch = model_config["arch"]
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"config key 'models.{name}.arch': unknown arch {arch!r}; "
            f"valid: {', '.join(ARCHITECTURES)}"
        )
    if arch != "resnet_small":
        for key in _SMALL_RESNET_ONLY:
            if key in model_config:
                raise ValueError(
                    f"config key 'models.{name}.{key}': only arch resnet_small uses it "
                    f"(this one is {arch})"
                )
    weights = model_config.get("weights")
    if weights is not None:
        if not isinstance(weights, str) or not weights:
            raise ValueError(
                f"config key 'models.{name}.weights': a torchvision weights name or a path, "
                f"got {weights!r}"
            )
        if is_weights_name(weights):
            try:
                pretrained_weights_path(arch, weights)
            except ValueError as err:
                raise ValueError(f"config key 'models.{name}.weights': {err}") from None


def build_model(
    model_config: dict[str, Any], num_classes: int, load_weights_from_config: bool = True
) -> nn.Module:
    """Build a model from its config entry (``kind``, ``arch``, ``weights`` and options).

    ``baseline`` and ``gradalign`` models are plain backbones (they differ only in
    training): ``arch`` (default ``resnet_small``, see :data:`ARCHITECTURES`) with a
    ``num_classes`` head. ``weights`` (a torchvision weights name, looked up in the
    local torch hub cache only, or a state-dict path) initializes them when
    ``load_weights_from_config`` (:func:`load_checkpoint` turns it off: a checkpoint
    holds every weight). A head pretrained on another number of classes stays fresh.

    A ``castream`` entry needs ``base_config``, the base model's own config (the
    train command adds it from the base checkpoint): the base architecture is built
    from it, without weights, and wrapped in a :class:`CAStream` with ``blocks_at``
    (default: all five positions). Its weights come from the base checkpoint or a
    castream checkpoint.
    """
    kind = model_config.get("kind", "baseline")
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; valid: {', '.join(KINDS)}")
    if kind == "castream":
        base_config = model_config.get("base_config")
        if not isinstance(base_config, dict):
            raise ValueError(
                "a castream model config needs 'base_config', the base model's config "
                "(`cambench train --base <checkpoint>` adds it)"
            )
        if base_config.get("kind", "baseline") == "castream":
            raise ValueError("the base of a castream model cannot itself be a castream model")
        base = build_model(base_config, num_classes, load_weights_from_config=False)
        return CAStream(base, model_config.get("blocks_at", POSITIONS))
    arch = model_config.get("arch", "resnet_small")
    if arch == "resnet_small":
        model: nn.Module = SmallResNet(
            num_classes,
            width=int(model_config.get("width", 16)),
            blocks=tuple(model_config.get("blocks", (2, 2, 2, 2))),
        )
        head = "fc"
    elif arch in TORCHVISION_ARCHS:
        model = build_torchvision(arch, num_classes)
        head = model.head_name
    else:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCHITECTURES)}")
    weights = model_config.get("weights")
    if weights and load_weights_from_config:
        load_weights(model, arch, weights, head)
    return model


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    model_config: dict[str, Any],
    num_classes: int,
    class_names: list[str],
) -> None:
    """Write weights plus the config that built them, atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "state_dict": state,
        "model_config": dict(model_config),
        "num_classes": int(num_classes),
        "class_names": list(class_names),
        "cambench_version": __version__,
    }
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model stored in ``path``, in eval mode.

    The model gets ``class_names`` and ``model_config`` (the config that built it)
    as attributes.
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:
        raise ValueError(f"{path}: not a readable cambench checkpoint ({err})") from err
    missing = {"state_dict", "model_config", "num_classes"} - set(payload)
    if missing:
        raise ValueError(f"{path}: not a cambench checkpoint, missing keys {sorted(missing)}")
    # every weight is in the checkpoint: pretrained weights are not needed (nor read)
    model = build_model(
        payload["model_config"], payload["num_classes"], load_weights_from_config=False
    )
    model.load_state_dict(payload["state_dict"])
    model.class_names = payload.get("class_names", [])
    model.model_config = dict(payload["model_config"])
    return model.to(map_location).eval()


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file: ties a saliency cache to the checkpoint that made it."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
