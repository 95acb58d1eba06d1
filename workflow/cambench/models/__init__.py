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
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cambench import __version__
from cambench.atomic import atomic_output
from cambench.digest import file_sha256
from cambench.models.castream import POSITIONS, CAStream
from cambench.models.external import (
    ARCH_FACTORIES,
    build_external,
    check_arch_name,
    is_external,
    register_arch,
    weights_state,
)
from cambench.models.huggingface import weights_path as check_hf_weights
from cambench.models.small_resnet import SmallResNet
from cambench.models.torchvision_models import (
    ARCHS as TORCHVISION_ARCHS,
)
from cambench.models.torchvision_models import (
    build_torchvision,
    is_weights_name,
    load_state_into,
    load_weights,
    pretrained_weights_path,
    require_pretrained_file,
    weights_file,
)

ARCHITECTURES = ("resnet_small", *TORCHVISION_ARCHS)
KINDS = ("baseline", "castream", "gradalign", "pretrained")
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
GAP_FC_ARCHS = ("resnet_small", "resnet18", "resnet34", "resnet50", "mobilenet_v2")
# torchvision families whose default target layer is followed by global average pooling
# and a Linear only (dropout aside): `cam` applies to their `torchvision:` models.
GAP_LINEAR_TORCHVISION = (
    "resnet",
    "resnext",
    "wide_resnet",
    "mobilenet_v2",
    "efficientnet",
    "regnet",
)


def has_gap_linear_head(arch: str) -> bool:
    """Whether a model of ``arch`` ends in GAP → Linear after its default target layer,
    so the workflow runs ``cam`` on it (the method checks the structure again on the
    model itself). Unknown (plug-in, ``timm:``) archs: False; ``cam`` works on them
    through the API when they have such a head."""
    name = arch.removeprefix("torchvision:")
    return arch in GAP_FC_ARCHS or (
        arch.startswith("torchvision:") and name.startswith(GAP_LINEAR_TORCHVISION)
    )


_SMALL_RESNET_ONLY = ("width", "blocks")

__all__ = [
    "ARCHITECTURES",
    "CASTREAM_BASE_ARCHS",
    "GAP_FC_ARCHS",
    "has_gap_linear_head",
    "KINDS",
    "ARCH_FACTORIES",
    "Checkpoint",
    "build_model",
    "build_on_meta",
    "check_model_config",
    "file_sha256",
    "load_checkpoint",
    "read_checkpoint",
    "register_arch",
    "save_checkpoint",
    "weights_file",
]


def check_model_config(name: str, model_config: dict[str, Any]) -> None:
    """ValueError naming ``models.<name>.<key>`` for model values that cannot work:
    ``width``/``blocks``
    on another arch than ``resnet_small``, and a ``weights`` name torchvision does not
    have for the arch (whether the file is in the local cache is checked when the
    model is built, on the machine that trains it). Which keys each kind takes, and
    CA-Stream's base, are checked by :func:`cambench.specs.parse_config`.
    """
    if model_config.get("kind") == "castream":
        return
    arch = model_config["arch"]
    if is_external(arch) or ":" in arch:
        _check_external_config(name, model_config)
        return
    for key in ("normalize", "arch_kwargs"):
        if key in model_config:
            raise ValueError(
                f"config key 'models.{name}.{key}': only torchvision:/timm:/plug-in archs use "
                f"it ({arch} has its normalization and options built in)"
            )
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"config key 'models.{name}.arch': unknown arch {arch!r}; valid: "
            f"{', '.join([*ARCHITECTURES, *ARCH_FACTORIES])}, torchvision:<name>, timm:<name>"
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


def _check_external_config(name: str, model_config: dict[str, Any]) -> None:
    """The checks of :func:`check_model_config` for torchvision:/timm:/plug-in archs:
    the name exists, a weights name is torchvision's, a weights file exists."""
    arch = model_config["arch"]
    try:
        check_arch_name(arch)
    except ValueError as err:
        raise ValueError(f"config key 'models.{name}.arch': {err}") from None
    for key in _SMALL_RESNET_ONLY:
        if key in model_config:
            raise ValueError(
                f"config key 'models.{name}.{key}': only arch resnet_small uses it (this one "
                f"is {arch}; pass options as arch_kwargs)"
            )
    weights = model_config.get("weights")
    if weights is None:
        return
    try:
        if arch.startswith("hf:"):
            check_hf_weights(weights)
        elif is_weights_name(weights):
            pretrained_weights_path(arch, weights)
        elif not Path(weights).is_file():
            raise ValueError(f"weights file {weights} does not exist")
    except ValueError as err:
        raise ValueError(f"config key 'models.{name}.weights': {err}") from None


def weights_source(model_config: dict[str, Any]) -> Path | None:
    """The file a model config's ``weights`` reads (a state dict, or torchvision's
    weights in the local torch hub cache), ``None`` without weights."""
    weights = model_config.get("weights")
    if not weights:
        return None
    if model_config.get("arch", "").startswith("hf:"):
        return check_hf_weights(weights)  # a save_pretrained directory's model.safetensors
    if not is_weights_name(weights):
        return Path(weights)
    return require_pretrained_file(model_config["arch"], weights)


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
    if is_external(arch) or ":" in arch:
        return build_external(model_config, num_classes, load_weights_from_config)
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
    if weights and load_weights_from_config and kind == "pretrained":
        # evaluation only: every weight must fit, the head included
        state, source = weights_state(arch, weights)
        load_state_into(model, state, "", source)
    elif weights and load_weights_from_config:
        load_weights(model, arch, weights, head)
    return model


def build_on_meta(model_config: dict[str, Any], num_classes: int | None = None) -> nn.Module | None:
    """The model a config entry builds, on PyTorch's meta device (no weights, no memory,
    no compute) and in eval mode, for config-time decisions about its structure (layer
    paths and shapes, attention blocks, bias layers); ``None`` when it cannot be built
    there (its weights file is read at build time, an operation without a meta kernel),
    and the job decides instead. ``num_classes``: the config's, else 10 (the head's
    width changes no such decision)."""
    classes = int(num_classes or model_config.get("num_classes") or 10)
    try:
        with torch.device("meta"):
            model = build_model(model_config, classes, load_weights_from_config=False)
    except Exception:  # noqa: BLE001  (whatever fails here, the job meets it with its files)
        return None
    return model.eval()


def checkpoint_digest(payload: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint's content: every weight's name, dtype, shape and bits,
    and the config, classes and provenance stored with them. Recorded at write
    (``content_sha256``) and checked at every load, so a flipped bit in the weights is an
    error, not a silently different model."""
    digest = hashlib.sha256()
    for key in sorted(payload["state_dict"]):
        value = payload["state_dict"][key]
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    meta = {k: payload.get(k) for k in ("model_config", "num_classes", "class_names", "provenance")}
    digest.update(json.dumps(meta, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    model_config: dict[str, Any],
    num_classes: int,
    class_names: list[str],
    provenance: dict[str, Any] | None = None,
) -> None:
    """Write weights plus the config that built them, atomically; ``provenance`` says
    where a converted (pretrained) model's weights came from."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "state_dict": state,
        "model_config": dict(model_config),
        "num_classes": int(num_classes),
        "class_names": list(class_names),
        "cambench_version": __version__,
    }
    if provenance is not None:
        payload["provenance"] = dict(provenance)
    payload["content_sha256"] = checkpoint_digest(payload)
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the model (eval mode) and what the file says about it —
    the config that built it, its number of classes and their names. The model
    itself carries no extra attributes."""

    model: nn.Module
    config: dict[str, Any]
    num_classes: int
    class_names: list[str]


def read_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """Rebuild the model stored in ``path`` (eval mode) with its metadata."""
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
    recorded = payload.get("content_sha256")
    if recorded is None:
        raise ValueError(
            f"{path}: no content checksum (written by an older cambench); delete it and rerun "
            "the job that made it"
        )
    if recorded != checkpoint_digest(payload):
        raise ValueError(
            f"{path}: checksum mismatch, the checkpoint is corrupt; delete it and rerun the "
            "job that made it"
        )
    # every weight is in the checkpoint: pretrained weights are not needed (nor read)
    model = build_model(
        payload["model_config"], payload["num_classes"], load_weights_from_config=False
    )
    model.load_state_dict(payload["state_dict"])
    return Checkpoint(
        model.to(map_location).eval(),
        dict(payload["model_config"]),
        int(payload["num_classes"]),
        list(payload.get("class_names", [])),
    )


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """The model stored in ``path``, in eval mode (:func:`read_checkpoint` also gives
    its config and class names)."""
    return read_checkpoint(path, map_location).model
