"""Model construction and checkpoints.

A checkpoint is a ``torch.save``d dict holding the weights and the model config that
built them, so :func:`load_checkpoint` needs nothing but the file.
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

ARCHITECTURES = ("resnet_small",)
KINDS = ("baseline", "castream", "gradalign")

# Keys that only one kind reads, and keys a castream model takes from its base.
_ONLY_FOR = {
    "base": "castream",
    "blocks_at": "castream",
    "lambda": "gradalign",
    "distance": "gradalign",
}
_FROM_BASE = ("arch", "width", "blocks")


def check_model_config(name: str, model_config: dict[str, Any]) -> None:
    """ValueError naming ``models.<name>.<key>`` for keys its kind would silently ignore.

    A castream model takes its architecture from its base (``arch``, ``width``,
    ``blocks`` are refused); ``base``/``blocks_at`` are castream-only and
    ``lambda``/``distance`` gradalign-only.
    """
    kind = model_config.get("kind", "baseline")
    if kind not in KINDS:
        raise ValueError(
            f"config key 'models.{name}.kind': unknown kind {kind!r}; valid: {', '.join(KINDS)}"
        )
    for key, owner in _ONLY_FOR.items():
        if key in model_config and kind != owner:
            raise ValueError(
                f"config key 'models.{name}.{key}': only {owner} models use it (this one is {kind})"
            )
    if kind == "castream":
        if "base" not in model_config:
            raise ValueError(
                f"config key 'models.{name}.base': a castream model needs a base model"
            )
        for key in _FROM_BASE:
            if key in model_config:
                raise ValueError(
                    f"config key 'models.{name}.{key}': a castream model takes its architecture "
                    f"from its base model {model_config['base']!r}"
                )


def build_model(model_config: dict[str, Any], num_classes: int) -> nn.Module:
    """Build an untrained model from its config entry (``kind``, ``arch`` and options).

    ``baseline`` and ``gradalign`` models are plain backbones (they differ only in
    training). A ``castream`` entry needs ``base_config``, the base model's own config
    (the train command adds it from the base checkpoint): the base architecture is
    built from it and wrapped in a :class:`CAStream` with ``blocks_at`` (default: all
    five positions). Its weights come from the base checkpoint or a castream checkpoint.
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
        base = build_model(base_config, num_classes)
        return CAStream(base, model_config.get("blocks_at", POSITIONS))
    arch = model_config.get("arch", "resnet_small")
    if arch == "resnet_small":
        return SmallResNet(
            num_classes,
            width=int(model_config.get("width", 16)),
            blocks=tuple(model_config.get("blocks", (2, 2, 2, 2))),
        )
    raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCHITECTURES)}")


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
    model = build_model(payload["model_config"], payload["num_classes"])
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
