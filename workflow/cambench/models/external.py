"""Architectures cambench does not define: plug-in factories, any torchvision or timm
classifier.

``arch`` of a model config names one of:

- ``torchvision:<name>``: any torchvision classification model
  (``torchvision.models.get_model(name, num_classes=..., **arch_kwargs)``);
- ``timm:<name>``: a timm model (optional extra ``cambench[timm]``), created offline
  (``pretrained=False``) and loaded from ``weights:``;
- a name registered by a plug-in with :func:`register_arch`:
  ``factory(num_classes, **arch_kwargs) -> nn.Module``.

Each is wrapped in an :class:`ExternalClassifier`: the input normalization
(``normalize:``; ImageNet statistics by default for torchvision and timm, none for
plug-ins) as its first module, the network as ``net``, and the network's output
adapted to logits (a dict's ``"logits"``, a tuple's first element, an object's
``.logits``). Layer paths are the network's own (``net.`` may be left out).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import fx, nn

from cambench.models.layers import default_layer_name
from cambench.models.normalization import Normalize
from cambench.models.torchvision_models import ARCHS as TORCHVISION_ARCHS
from cambench.models.torchvision_models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    is_weights_name,
    read_state_dict,
    require_pretrained_file,
)
from cambench.names import check_name
from cambench.plugins import source_file

ArchFactory = Callable[..., nn.Module]

#: Plug-in architectures: name → ``factory(num_classes, **arch_kwargs)``.
ARCH_FACTORIES: dict[str, ArchFactory] = {}
PREFIXES = ("torchvision:", "timm:")


def register_arch(name: str) -> Callable[[ArchFactory], ArchFactory]:
    """Decorator registering ``factory(num_classes, **arch_kwargs) -> nn.Module`` as
    the architecture ``name`` (``arch: <name>`` in a model config)."""

    def decorate(factory: ArchFactory) -> ArchFactory:
        try:
            check_name(name, "architecture")
        except ValueError as err:
            where = source_file(factory)
            raise ValueError(
                f"{err}{f' (registered by plug-in {where})' if where else ''}"
            ) from None
        if name == "resnet_small" or name in TORCHVISION_ARCHS:
            raise ValueError(f"architecture {name!r} registered twice (cambench defines it)")
        if name in ARCH_FACTORIES:
            where = source_file(ARCH_FACTORIES[name]) or "cambench"
            raise ValueError(f"architecture {name!r} registered twice ({where} has it)")
        ARCH_FACTORIES[name] = factory
        return factory

    return decorate


def is_external(arch: str) -> bool:
    """Whether ``arch`` is a torchvision:/timm: name or a plug-in architecture."""
    return arch.startswith(PREFIXES) or arch in ARCH_FACTORIES


def arch_factory(arch: str) -> ArchFactory | None:
    """The plug-in factory of ``arch`` (``None`` for the other kinds)."""
    return ARCH_FACTORIES.get(arch)


def default_normalization(arch: str) -> tuple[Sequence[float], Sequence[float]] | None:
    """ImageNet statistics for torchvision and timm models, none for plug-ins."""
    return (IMAGENET_MEAN, IMAGENET_STD) if arch.startswith(PREFIXES) else None


def normalization(config: dict[str, Any]) -> tuple[Sequence[float], Sequence[float]] | None:
    """``(mean, std)`` of a config's ``normalize`` (``none``: ``None``), or the default."""
    value = config.get("normalize")
    if value is None:
        return default_normalization(config["arch"])
    if value == "none":
        return None
    return tuple(value["mean"]), tuple(value["std"])


class ExternalClassifier(nn.Module):
    """``normalize`` (or identity) → ``net`` → logits (see the module doc)."""

    layer_prefix = "net."

    def __init__(
        self,
        arch: str,
        net: nn.Module,
        norm: tuple[Sequence[float], Sequence[float]] | None,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.normalize: nn.Module = Normalize(*norm) if norm else nn.Identity()
        self.net = net

    @property
    def default_target_layer(self) -> str:
        return self.layer_prefix + default_layer_name(self.net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_of(self.net(self.normalize(x)))

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}"


def logits_of(out: Any) -> torch.Tensor:
    """The logits in a model's output: the tensor itself, a dict's ``"logits"``, a
    tuple's or list's first element, or an object's ``.logits``."""
    if isinstance(out, (torch.Tensor, fx.Proxy)):
        return out
    if isinstance(out, dict):
        if "logits" not in out:
            raise ValueError(
                f"the model returned a dict without 'logits' (keys: {', '.join(map(str, out))})"
            )
        return out["logits"]
    if isinstance(out, (tuple, list)) and out:
        return logits_of(out[0])
    if hasattr(out, "logits"):
        return out.logits
    raise ValueError(f"the model returned {type(out).__name__}; expected logits")


def _torchvision_net(name: str, num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    import torchvision.models

    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(
            f"unknown torchvision classification model {name!r} (torchvision "
            f"{torchvision.__version__}; see torchvision.models.list_models())"
        )
    try:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    except TypeError as err:
        raise ValueError(f"torchvision model {name} with arch_kwargs {kwargs}: {err}") from None


def _timm_net(name: str, num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    timm = _timm(name)
    return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)


def check_arch_name(arch: str) -> None:
    """ValueError unless ``arch`` names a torchvision/timm model or a plug-in arch."""
    name = arch.partition(":")[2]
    if arch.startswith("torchvision:"):
        import torchvision.models

        if name not in torchvision.models.list_models(module=torchvision.models):
            raise ValueError(f"unknown torchvision classification model {name!r}")
    elif arch.startswith("timm:"):
        _timm(name)
    elif arch not in ARCH_FACTORIES:
        raise ValueError(f"unknown arch {arch!r}")


def _timm(name: str) -> Any:
    """The timm module, checked to have model ``name``."""
    try:
        import timm
    except ImportError:
        raise ValueError(
            "timm is not installed: `pip install 'cambench[timm]'` (or `pip install timm`)"
        ) from None
    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r} (see timm.list_models())")
    return timm


def build_net(arch: str, num_classes: int, arch_kwargs: dict[str, Any]) -> nn.Module:
    """The bare network of an external ``arch``, randomly initialized."""
    kwargs = dict(arch_kwargs or {})
    if arch.startswith("torchvision:"):
        return _torchvision_net(arch.partition(":")[2], num_classes, kwargs)
    if arch.startswith("timm:"):
        return _timm_net(arch.partition(":")[2], num_classes, kwargs)
    factory = ARCH_FACTORIES.get(arch)
    if factory is None:
        raise ValueError(f"unknown arch {arch!r}; is the plug-in that registers it loaded?")
    try:
        net = factory(num_classes, **kwargs)
    except TypeError as err:
        where = source_file(factory) or "?"
        raise ValueError(f"architecture {arch!r} (plug-in {where}): {err}") from None
    if not isinstance(net, nn.Module):
        where = source_file(factory) or "?"
        raise ValueError(
            f"architecture {arch!r} (plug-in {where}) returned {type(net).__name__}, not an "
            "nn.Module"
        )
    return net


def weights_state(arch: str, weights: str) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict ``weights`` names (a torchvision weights name, local cache only,
    or a path) and the file it came from; a cambench checkpoint of an external model
    gives its network's part."""
    if is_weights_name(weights):
        path = require_pretrained_file(arch, weights)
    else:
        from pathlib import Path

        path = Path(weights)
    state = read_state_dict(path)
    if state and all(k.startswith(("net.", "normalize.")) for k in state):
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    return state, str(path)


def load_strict(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``net``; ValueError naming mismatched keys otherwise."""
    own = net.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    problems = []
    for label, keys in (
        ("shape mismatch", wrong),
        ("missing", missing),
        ("unexpected", unexpected),
    ):
        if keys:
            problems.append(f"{label}: " + ", ".join(keys[:5]) + (", …" if len(keys) > 5 else ""))
    if problems:
        raise ValueError(f"weights {source} do not fit the model: " + "; ".join(problems))
    net.load_state_dict(state)


def build_external(
    config: dict[str, Any], num_classes: int, load_weights: bool = True
) -> ExternalClassifier:
    """An :class:`ExternalClassifier` of ``config`` (``arch``, ``arch_kwargs``,
    ``normalize``, ``weights``)."""
    arch = config["arch"]
    net = build_net(arch, num_classes, config.get("arch_kwargs") or {})
    weights = config.get("weights")
    if weights and load_weights:
        state, source = weights_state(arch, weights)
        load_strict(net, state, source)
    return ExternalClassifier(arch, net, normalization(config))
