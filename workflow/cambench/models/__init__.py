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
from cambench.models.small_resnet import SmallResNet

ARCHITECTURES = ("resnet_small",)


def build_model(model_config: dict[str, Any], num_classes: int) -> nn.Module:
    """Build an untrained model from its config entry (``arch`` and its options)."""
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
    """Rebuild the model stored in ``path``, in eval mode."""
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
    return model.to(map_location).eval()


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file: ties a saliency cache to the checkpoint that made it."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
