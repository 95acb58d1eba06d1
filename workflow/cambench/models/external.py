"""Architectures cambench does not define: plug-in factories, any torchvision, timm or
HuggingFace transformers classifier.

``arch`` of a model config names one of:

- ``torchvision:<name>``: any torchvision classification model
  (``torchvision.models.get_model(name, num_classes=..., **arch_kwargs)``);
- ``timm:<name>``: a timm model (optional extra ``cambench[timm]``), created offline
  (``pretrained=False``) and loaded from ``weights:``;
- ``hf:<Class or model type>``: a transformers image classifier (optional extra
  ``cambench[hf]``), loaded from a ``save_pretrained`` directory or its
  ``model.safetensors`` (:mod:`cambench.models.huggingface`);
- a name registered by a plug-in with :func:`register_arch`:
  ``factory(num_classes, **arch_kwargs) -> nn.Module``.

Each is wrapped in an :class:`ExternalClassifier`: the input normalization
(``normalize:``; ImageNet statistics by default for torchvision, timm and hf, none
for plug-ins) as its first module, the network as ``net``, and the network's output
adapted to logits (a dict's ``"logits"``, a tuple's first element, an object's
``.logits``). Layer paths are the network's own (``net.`` may be left out). Default
target layers: torchvision's and timm's families in :mod:`cambench.models.layers`,
transformers' ViT, DeiT, Swin, ConvNeXt and ResNet in
:func:`cambench.models.huggingface.default_layer` (an :class:`HFClassifier` records it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from cambench.models import huggingface
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
PREFIXES = ("torchvision:", "timm:", huggingface.PREFIX)


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
    """Whether ``arch`` is a torchvision:/timm:/hf: name or a plug-in architecture."""
    return arch.startswith(PREFIXES) or arch in ARCH_FACTORIES


def arch_factory(arch: str) -> ArchFactory | None:
    """The plug-in factory of ``arch`` (``None`` for the other kinds)."""
    return ARCH_FACTORIES.get(arch)


def default_normalization(arch: str) -> tuple[Sequence[float], Sequence[float]] | None:
    """ImageNet statistics for torchvision, timm and hf models, none for plug-ins (an
    hf model whose processor uses other statistics, e.g. 0.5/0.5 for google/vit-*,
    needs ``normalize:``)."""
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


class HFClassifier(ExternalClassifier):
    """An :class:`ExternalClassifier` of a transformers model whose family has a known
    default target layer (:func:`cambench.models.huggingface.default_layer`): recorded
    as the model's own choice, so no probe replaces it."""

    default_target_layer: str = ""  # replaces the parent's computed property

    def __init__(
        self,
        arch: str,
        net: nn.Module,
        norm: tuple[Sequence[float], Sequence[float]] | None,
        layer: str,
    ) -> None:
        super().__init__(arch, net, norm)
        self.default_target_layer = self.layer_prefix + layer


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
    """ValueError unless ``arch`` names a torchvision/timm/hf model or a plug-in arch;
    an unknown ``<prefix>:`` lists the valid prefixes."""
    prefix, colon, name = arch.partition(":")
    if colon and prefix + ":" not in PREFIXES:
        raise ValueError(
            f"unknown architecture prefix {prefix + ':'!r} in {arch!r}; valid prefixes: "
            + ", ".join(f"{p}<name>" for p in PREFIXES)
        )
    if arch.startswith(huggingface.PREFIX):
        huggingface.model_class(name)
    elif arch.startswith("torchvision:"):
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
    if arch.startswith(huggingface.PREFIX):
        return huggingface.build_hf_net({"arch": arch, "arch_kwargs": kwargs}, num_classes, False)
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
    path = require_pretrained_file(arch, weights) if is_weights_name(weights) else Path(weights)
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
    if arch.startswith(huggingface.PREFIX):
        net = huggingface.build_hf_net(config, num_classes, load_weights)
        layer = huggingface.default_layer(net)
        if layer is not None:
            return HFClassifier(arch, net, normalization(config), layer)
        return ExternalClassifier(arch, net, normalization(config))
    net = build_net(arch, num_classes, config.get("arch_kwargs") or {})
    weights = config.get("weights")
    if weights and load_weights:
        state, source = weights_state(arch, weights)
        load_strict(net, state, source)
    return ExternalClassifier(arch, net, normalization(config))


def check_weights_available(name: str, model_config: dict[str, Any]) -> None:
    """ValueError naming ``models.<name>.weights`` unless the weights a model config
    names can be read on this machine: a torchvision weights name in the local torch
    hub cache, a state-dict file, an hf: model's ``save_pretrained`` directory or
    ``.safetensors`` file. Called when the workflow reads its config, so a missing file
    fails before any job runs (on a cluster the cache and files must be visible from
    the machine that runs snakemake as from the nodes)."""
    weights = model_config.get("weights")
    if not isinstance(weights, str) or not weights or model_config.get("kind") == "castream":
        return
    arch = str(model_config.get("arch", "resnet_small"))
    try:
        if arch.startswith(huggingface.PREFIX):
            huggingface.weights_path(weights)
        elif is_weights_name(weights):
            require_pretrained_file(arch, weights)
        elif not Path(weights).is_file():
            raise ValueError(
                f"weights file {weights} does not exist (relative to the working directory "
                f"{Path.cwd()})"
            )
    except ValueError as err:
        raise ValueError(f"config key 'models.{name}.weights': {err}") from None
