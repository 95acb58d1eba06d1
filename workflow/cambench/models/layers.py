"""Finding the target layer of a model: by dotted path, by module, or by default."""

from __future__ import annotations

from torch import nn

# Default CAM target layers of torchvision families (the last convolutional stage).
_TORCHVISION_DEFAULTS = {
    "ResNet": "layer4",
    "VGG": "features",
    "MobileNetV2": "features",
    "MobileNetV3": "features",
    "ConvNeXt": "features",
    "DenseNet": "features",
    "EfficientNet": "features",
    "RegNet": "trunk_output",
}


def _contains_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def _vit_layer(model: nn.Module) -> str | None:
    """ViT-style models: the last encoder block's first LayerNorm (torchvision's
    ``encoder.layers[-1].ln_1``, timm's ``blocks[-1].norm1``), as pytorch-grad-cam
    recommends for vision transformers."""
    modules = dict(model.named_modules())
    layers = modules.get("encoder.layers")
    if isinstance(layers, nn.Sequential) and len(layers):
        name = f"encoder.layers.{list(dict(layers.named_children()))[-1]}.ln_1"
        if name in modules:
            return name
    blocks = modules.get("blocks")
    if isinstance(blocks, nn.Sequential) and len(blocks):
        name = f"blocks.{len(blocks) - 1}.norm1"
        if name in modules and not _contains_conv(blocks):
            return name
    return None


def default_layer_name(model: nn.Module) -> str:
    """The model's own ``default_target_layer``, a known torchvision default, a ViT's
    last block's first LayerNorm, or the last top-level child that contains a
    convolution."""
    name = getattr(model, "default_target_layer", None)
    if isinstance(name, str):
        return name
    known = _TORCHVISION_DEFAULTS.get(type(model).__name__)
    if known is not None and known in dict(model.named_modules()):
        return known
    vit = _vit_layer(model)
    if vit is not None:
        return vit
    candidates = [n for n, child in model.named_children() if _contains_conv(child)]
    if not candidates:
        raise ValueError(
            f"{type(model).__name__} has no convolutional layer; pass layer= explicitly"
        )
    return candidates[-1]


def layer_candidates(model: nn.Module, limit: int = 40) -> list[str]:
    """Dotted paths of modules that contain a convolution (for error messages)."""
    names = [n for n, m in model.named_modules() if n and _contains_conv(m)]
    return names[-limit:]


def resolve_layer(model: nn.Module, layer: str | nn.Module | None) -> tuple[str, nn.Module]:
    """Return ``(dotted_path, module)`` for ``layer`` (``None`` = the default)."""
    modules = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        for name, module in modules.items():
            if module is layer:
                return name, module
        raise ValueError(f"the given layer module is not part of {type(model).__name__}")
    name = default_layer_name(model) if layer is None else layer
    prefix = getattr(model, "layer_prefix", "")  # a wrapped network's paths may omit it
    if isinstance(name, str) and name and name not in modules and prefix + name in modules:
        name = prefix + name
    if not isinstance(name, str) or name not in modules or name == "":
        raise ValueError(
            f"layer {name!r} not found in {type(model).__name__}; candidates: "
            + ", ".join(layer_candidates(model))
        )
    return name, modules[name]
