"""torchvision ImageNet backbones, wrapped with their input normalization.

:class:`TorchvisionClassifier` holds a ``normalize`` module (ImageNet mean and std,
for images in [0, 1]) as its FIRST module, followed by the torchvision model's own
top-level modules registered under their torchvision names. The state-dict keys are
therefore torchvision's (plus ``normalize.mean``/``normalize.std``), a torchvision
state dict loads directly, and dotted layer paths read as in torchvision
(``layer4``, ``features.42``).

| arch | modules, in call order | default CAM target layer | classifier head |
|---|---|---|---|
| ``resnet18``/``resnet34``/``resnet50`` | conv1 bn1 relu maxpool layer1…layer4 avgpool fc | ``layer4`` (last stage) | ``fc`` |
| ``mobilenet_v2`` | features avgpool classifier | ``features`` (its last block: the 1×1 conv to 1280 channels, BN, ReLU6) | ``classifier.1`` |
| ``vgg16_bn`` | features avgpool classifier | ``features`` (after the last ReLU *and* the last max-pool, ``features.43``) | ``classifier.6`` |
| ``convnext_tiny`` | features avgpool classifier | ``features`` (the last stage, before the head's LayerNorm) | ``classifier.2`` |

**Choice (VGG16-BN):** the default target is the whole ``features`` block, i.e. the
output of the final max-pool (stride 32, like the other archs' last stages; the map
pytorch-grad-cam's documentation recommends for VGG). ``features.42`` (the last
ReLU, stride 16) is a finer alternative: set ``layer: features.42`` in the model's
config.

MobileNetV2 gets an ``avgpool`` module (``AdaptiveAvgPool2d(1)``, no parameters) in
place of torchvision's functional pooling, so every arch has the same layout
``features → avgpool → (flatten) → classifier``. The ResNets expose ``castream_stem``
(the modules before ``layer1``), which :class:`cambench.models.castream.CAStream`
uses to run a class-token stream beside them.

Activations: the ResNets and VGG use ``nn.ReLU`` modules, MobileNetV2 ``nn.ReLU6``
(guided backpropagation and gradient-aligned training apply); ConvNeXt uses GELU, so
guided backpropagation and ``gradalign`` training refuse it.

Weights (``weights`` key of a model config, see :func:`load_weights`): ``None`` (random
initialization, torchvision's), a torchvision weights name such as ``IMAGENET1K_V1``
— read from the local torch hub cache ``torch.hub.get_dir()/checkpoints/<file>``,
never downloaded — or the path of a local state dict. ``num_classes`` other than
1000 replaces the classifier head (a fresh, randomly initialized Linear); pretrained
weights then load everything but the head.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from cambench.models.normalization import Normalize

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ArchSpec:
    """How to lay out one torchvision architecture."""

    family: str
    order: tuple[str, ...]  # top-level modules in call order
    flatten_after: str | None  # flatten (B, C, 1, 1) → (B, C) after this module
    target: str  # default CAM target layer
    head: str  # dotted path of the final Linear


_RESNET = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool")
ARCHS: dict[str, ArchSpec] = {
    **{
        name: ArchSpec("resnet", (*_RESNET, "fc"), "avgpool", "layer4", "fc")
        for name in ("resnet18", "resnet34", "resnet50")
    },
    "mobilenet_v2": ArchSpec(
        "mobilenet_v2", ("features", "avgpool", "classifier"), "avgpool", "features", "classifier.1"
    ),
    "vgg16_bn": ArchSpec(
        "vgg", ("features", "avgpool", "classifier"), "avgpool", "features", "classifier.6"
    ),
    # ConvNeXt's classifier holds its own LayerNorm2d and Flatten
    "convnext_tiny": ArchSpec(
        "convnext", ("features", "avgpool", "classifier"), None, "features", "classifier.2"
    ),
}
RESNET_STEM = ("normalize", "conv1", "bn1", "relu", "maxpool")


class TorchvisionClassifier(nn.Module):
    """``normalize`` followed by a torchvision model's modules (see the module doc)."""

    def __init__(
        self,
        arch: str,
        net: nn.Module,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown torchvision arch {arch!r}; valid: {', '.join(ARCHS)}")
        spec = ARCHS[arch]
        self.arch = arch
        self.spec = spec
        self.normalize = Normalize(mean, std)
        children = dict(net.named_children())
        if spec.family == "mobilenet_v2":
            children["avgpool"] = nn.AdaptiveAvgPool2d(1)
        for name in spec.order:
            self.add_module(name, children[name])
        self.default_target_layer = spec.target
        self.head_name = spec.head
        self.castream_stem = RESNET_STEM if spec.family == "resnet" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        for name in self.spec.order:
            x = getattr(self, name)(x)
            if name == self.spec.flatten_after:
                x = torch.flatten(x, 1)
        return x

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, default_target_layer={self.default_target_layer!r}"


def build_torchvision(arch: str, num_classes: int) -> TorchvisionClassifier:
    """A randomly initialized (torchvision's init) ``arch`` with a ``num_classes`` head."""
    import torchvision.models

    if arch not in ARCHS:
        raise ValueError(f"unknown torchvision arch {arch!r}; valid: {', '.join(ARCHS)}")
    net = getattr(torchvision.models, arch)(weights=None, num_classes=int(num_classes))
    return TorchvisionClassifier(arch, net)


# --------------------------------------------------------------------------- weights

_WEIGHTS_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


def is_weights_name(weights: str) -> bool:
    """Whether a ``weights`` value is a torchvision weights name (``IMAGENET1K_V1``,
    ``DEFAULT``: upper-case letters, digits, underscores) rather than a file path."""
    return bool(_WEIGHTS_NAME.match(weights))


def weights_file(model_config: dict[str, Any]) -> str | None:
    """The local state-dict file a model config's ``weights`` names, if it is a path."""
    weights = model_config.get("weights")
    if isinstance(weights, str) and weights and not is_weights_name(weights):
        return weights
    return None


def pretrained_weights_path(arch: str, name: str) -> Path:
    """Where torchvision's weights ``name`` of ``arch`` (one of :data:`ARCHS` or
    ``torchvision:<model>``) must lie in the local hub cache.

    ValueError when ``arch``/``name`` has no such weights. The file is not checked.
    """
    from torchvision.models import get_model_weights

    if arch not in ARCHS and not arch.startswith("torchvision:"):
        raise ValueError(
            f"arch {arch!r} has no torchvision pretrained weights; give weights as the path "
            "of a local state dict (.pt/.pth) instead"
        )
    enum = get_model_weights(arch.removeprefix("torchvision:"))
    if name not in enum.__members__:
        raise ValueError(
            f"unknown weights {name!r} for {arch}; valid: {', '.join(enum.__members__)} "
            "or the path of a local state dict (.pt/.pth)"
        )
    url = enum[name].url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def require_pretrained_file(arch: str, name: str) -> Path:
    """The cached file of torchvision's weights ``name``; ValueError saying how to
    provide it when it is missing. Nothing is ever downloaded."""
    from torchvision.models import get_model_weights

    path = pretrained_weights_path(arch, name)
    if not path.is_file():
        model = arch.removeprefix("torchvision:")
        url = get_model_weights(model)[name].url
        raise ValueError(
            f"pretrained weights {name} of {arch} are not in the local torch hub cache: "
            f"expected {path} (cambench never downloads). Provide them by downloading {url} "
            f'to that path (on a machine with internet: `python -c "import torchvision; '
            f"torchvision.models.{model}(weights='{name}')\"`, then copy the file; "
            "TORCH_HOME moves the cache), or set the model's weights to the path of a local "
            "state dict (.pt/.pth)"
        )
    return path


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pt``/``.pth`` file: a plain state dict, a cambench
    checkpoint (its ``state_dict``), or a ``{"state_dict": ...}``/``{"model": ...}``
    wrapper; a DDP ``module.`` prefix is removed."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: not a readable state dict ({err})") from err
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{path}: not a state dict (a mapping of names to tensors)")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_state_into(
    model: nn.Module, state: dict[str, torch.Tensor], head: str, source: str
) -> list[str]:
    """Load ``state`` into ``model``; return the head keys left out.

    The classifier head (module path ``head``) is left at its fresh initialization
    when its shape differs (pretrained on another number of classes). Keys the model
    has but ``state`` lacks are allowed only for ``normalize.*`` (torchvision state
    dicts hold no normalization); every other difference is a ValueError naming
    ``source``.
    """
    own = model.state_dict()
    skipped = [
        k
        for k, v in state.items()
        if k in own and own[k].shape != v.shape and k.startswith(head + ".")
    ]
    wrong = [
        f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape and k not in skipped
    ]
    missing = [k for k in own if k not in state and not k.startswith("normalize.")]
    unexpected = [k for k in state if k not in own]
    problems = []
    if wrong:
        problems.append("shape mismatch: " + ", ".join(wrong[:5]))
    if missing:
        problems.append("missing: " + ", ".join(missing[:5]) + (", …" if len(missing) > 5 else ""))
    if unexpected:
        problems.append(
            "unexpected: " + ", ".join(unexpected[:5]) + (", …" if len(unexpected) > 5 else "")
        )
    if problems:
        raise ValueError(
            f"weights {source} do not fit {type(model).__name__} "
            f"({getattr(model, 'arch', '')}): " + "; ".join(problems)
        )
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    return skipped


def load_weights(model: nn.Module, arch: str, weights: str, head: str) -> list[str]:
    """Load ``weights`` (a torchvision weights name or a state-dict path) into
    ``model`` (built without weights); return the head keys left at their fresh init.

    A weights name is looked up in the local torch hub cache only: a missing file is a
    ValueError saying where to put it, at once (no download is ever tried).
    """
    if is_weights_name(weights):
        path = require_pretrained_file(arch, weights)
        source = f"{weights} ({path})"
    else:
        path = Path(weights)
        source = str(path)
    return load_state_into(model, read_state_dict(path), head, source)
