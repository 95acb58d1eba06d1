"""Finding the target layer of a model (by dotted path, by module, by default) and
reading its output as a CAM map (B, C, h, w): channels first, channels last, tokens."""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import torch
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

#: The layouts a caller may force (``explain(..., layout=...)``).
LAYOUTS = ("channels_first", "channels_last", "tokens")


# ---------------------------------------------------------------------------------------
# Layouts: how a layer's output becomes the (B, C, h, w) map A, and back


@dataclass(frozen=True)
class TokenLayout:
    """How a transformer layer's token output (B, prefix + h·w, C) maps to a CAM
    activation (B, C, h, w): the ``prefix`` class/register tokens are dropped and the
    others laid out row by row (pytorch-grad-cam's ``reshape_transform`` for ViTs)."""

    prefix: int
    h: int
    w: int

    @staticmethod
    def infer(tokens: int, layer_name: str) -> TokenLayout:
        """The layout of ``tokens`` tokens: a square grid, after 0 or 1 class token, or
        2 (DeiT's class and distillation tokens; no count is a square plus both 1 and 2)."""
        for prefix in (0, 1, 2):
            side = math.isqrt(tokens - prefix)
            if side > 0 and side * side == tokens - prefix:
                return TokenLayout(prefix, side, side)
        raise ValueError(
            f"target layer {layer_name} outputs {tokens} tokens: neither a square grid nor "
            "one class token and a square grid; choose another layer"
        )

    def to_map(self, output: torch.Tensor) -> torch.Tensor:
        b, _, c = output.shape
        return output[:, self.prefix :].reshape(b, self.h, self.w, c).permute(0, 3, 1, 2)

    def rest(self, output: torch.Tensor) -> torch.Tensor:
        """A copy of what the map leaves out: the prefix tokens (B, prefix, C)."""
        return output[:, : self.prefix].detach().clone()

    def to_output(self, acts: torch.Tensor, output: torch.Tensor | None) -> torch.Tensor:
        """``acts`` (B, C, h, w) back as tokens, after the prefix tokens of ``output``
        (the layer's output or its :meth:`rest`)."""
        grid = acts.permute(0, 2, 3, 1).reshape(acts.shape[0], self.h * self.w, acts.shape[1])
        return torch.cat([output[:, : self.prefix].detach(), grid], 1)


@dataclass(frozen=True)
class ChannelsLast:
    """A (B, h, w, C) output (Swin stages, a LayerNorm or Linear over the last dim of a
    4-D tensor as in ConvNeXt blocks) read as the map (B, C, h, w): a permute, which
    gradients pass through (pytorch-grad-cam's Swin ``reshape_transform``)."""

    def to_map(self, output: torch.Tensor) -> torch.Tensor:
        return output.permute(0, 3, 1, 2)

    def rest(self, output: torch.Tensor) -> None:
        """Nothing: the map holds the whole output."""
        return None

    def to_output(self, acts: torch.Tensor, output: torch.Tensor | None = None) -> torch.Tensor:
        """``acts`` (B, C, h, w) back as a fresh contiguous (B, h, w, C) tensor (the model
        may reshape it with ``view`` or modify it in place)."""
        return acts.permute(0, 2, 3, 1).clone(memory_format=torch.contiguous_format)


#: ``None``: the output is the map itself (B, C, h, w).
Layout = TokenLayout | ChannelsLast | None

_FORCED: ContextVar[tuple[nn.Module, str] | None] = ContextVar("forced_layout", default=None)


@contextlib.contextmanager
def forced_layout(layer: nn.Module | None, layout: str | None) -> Iterator[None]:
    """Within the block, read ``layer``'s output as ``layout`` (one of :data:`LAYOUTS`)
    instead of detecting it; ``None`` detects. For outputs whose layout the evidence
    leaves ambiguous, e.g. a (B, 96, 96, 96) Swin stage."""
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)} or None, got {layout!r}")
    token = _FORCED.set((layer, layout) if layer is not None and layout is not None else None)
    try:
        yield
    finally:
        _FORCED.reset(token)


def _channel_counts(module: nn.Module) -> tuple[set[int], set[int]]:
    """Channel counts of the layers inside ``module``: those of layers that act on the
    last dimension (a LayerNorm over one dimension, a Linear's outputs), and those of
    every layer, adding the channels-first ones (Conv2d outputs, batch and group
    norms)."""
    last: set[int] = set()
    every: set[int] = set()
    for m in module.modules():
        if isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1:
            last.add(m.normalized_shape[0])
        elif isinstance(m, nn.Linear):
            last.add(m.out_features)
        elif isinstance(m, nn.Conv2d):
            every.add(m.out_channels)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            every.add(m.num_features)
        elif isinstance(m, nn.GroupNorm):
            every.add(m.num_channels)
    return last, every | last


def is_channels_last(module: nn.Module, shape: torch.Size | tuple[int, ...]) -> bool:
    """Whether ``module``'s 4-D output of ``shape`` is (B, h, w, C), by evidence: a
    layer inside it that acts on the last dimension has that dimension's size as its
    channel count, and no layer inside it has dimension 1's. Convolutions and batch
    norms count only against: their channels are dimension 1, and a block that
    concatenates (DenseNet) has none of its output's channel count. Anything else,
    ambiguous cases included (h = C), stays (B, C, h, w)."""
    _, d1, _, d3 = shape
    last, every = _channel_counts(module)
    return d1 != d3 and d3 in last and d1 not in every


def layer_layout(module: nn.Module, output: object) -> Layout:
    """``None`` for a (B, C, h, w) output, :class:`ChannelsLast` for a (B, h, w, C)
    one (:func:`is_channels_last`), the :class:`TokenLayout` of a (B, N, C) one, or
    the layout forced by :func:`forced_layout`; ValueError for anything else."""
    forced = _FORCED.get()
    mode = forced[1] if forced is not None and forced[0] is module else None
    name = type(module).__name__
    if isinstance(output, torch.Tensor) and output.ndim == 4 and mode != "tokens":
        if mode == "channels_last" or (mode is None and is_channels_last(module, output.shape)):
            return ChannelsLast()
        return None
    if isinstance(output, torch.Tensor) and output.ndim == 3 and mode in (None, "tokens"):
        return TokenLayout.infer(output.shape[1], name)
    shape = getattr(output, "shape", type(output).__name__)
    if mode is not None:
        raise ValueError(f"target layer {name} outputs {shape}, which cannot be read as {mode}")
    raise ValueError(
        f"target layer {name} must output a (B, C, h, w) or (B, h, w, C) tensor or "
        f"(B, tokens, C) tokens, got {shape}"
    )


def map_size(module: nn.Module, output: object) -> int:
    """``h·w`` of ``module``'s output read as a map (0 when it cannot be read as one)."""
    try:
        layout = layer_layout(module, output)
    except ValueError:
        return 0
    if isinstance(layout, TokenLayout):
        return layout.h * layout.w
    h, w = output.shape[1:3] if isinstance(layout, ChannelsLast) else output.shape[2:]
    return h * w


# ---------------------------------------------------------------------------------------
# Default target layers


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


def _wrapped(model: nn.Module) -> tuple[str, nn.Module] | None:
    """``(prefix, network)`` of a wrapper whose layer paths are its network's behind
    ``layer_prefix`` (:class:`cambench.models.external.ExternalClassifier`)."""
    prefix = getattr(model, "layer_prefix", "")
    if isinstance(prefix, str) and prefix.endswith("."):
        net = dict(model.named_children()).get(prefix[:-1])
        if net is not None:
            return prefix, net
    return None


def _logits_of(out: object) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        return out.get("logits")
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def _reaches_logits(module: nn.Module, output: torch.Tensor, grad: torch.Tensor | None) -> bool:
    """Whether the logits depend on ``output`` at its map positions (a ViT's patch
    tokens, not only its class token)."""
    if grad is None:
        return False
    try:
        layout = layer_layout(module, output)
        positions = layout.to_map(grad) if hasattr(layout, "to_map") else grad
    except (ValueError, RuntimeError):
        return False
    return bool(positions.detach().abs().amax() > 0)


def probe_layer(model: nn.Module, example: torch.Tensor) -> str:
    """The last module, in the order forwards finish, whose output on ``example[:1]``
    is a map with ``h·w > 1`` (channels first or last) or a square token grid, and
    whose map positions the logits depend on: one forward in eval mode, hooks on every
    module, and one backward to the outputs. A layer whose output reaches the logits
    only through a class token (a ViT's final norm, its last block's MLP) has zero
    gradient at its patch tokens and is passed over; among token outputs only
    normalization layers count (the attention's own projections are not a layer to
    explain), so a ViT gets its last block's first norm, as for torchvision and timm.
    Modules that run before any learned layer (the input normalization) do not count.
    Without a gradient path (the logits are not differentiable) the last map is taken."""
    found: list[tuple[str, tuple[int, ...], int]] = []
    outputs: dict[str, tuple[nn.Module, torch.Tensor]] = {}
    learned = False

    def record(name: str, module: nn.Module, output: object) -> None:
        nonlocal learned
        learned = learned or next(module.parameters(), None) is not None
        if isinstance(output, torch.Tensor):
            size = map_size(module, output) if learned else 0
            found.append((name, tuple(output.shape), size))
            if size > 1 and output.requires_grad:
                outputs[name] = (module, output)

    modes = {m: m.training for m in model.modules()}
    handles = [
        m.register_forward_hook(lambda m, i, o, name=name: record(name, m, o))
        for name, m in model.named_modules()
        if name
    ]
    grads: dict[str, torch.Tensor | None] = {}
    try:
        model.eval()
        x = example[:1].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = _logits_of(model(x))
            names = list(outputs)
            if logits is not None and logits.requires_grad and names:
                try:
                    values = torch.autograd.grad(
                        logits.max(), [outputs[n][1] for n in names], allow_unused=True
                    )
                    grads = dict(zip(names, values, strict=True))
                except RuntimeError:  # e.g. an output modified in place: shapes only
                    grads = {}
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in modes.items():
            m.training = mode
    maps = [name for name, _, size in found if size > 1]
    if grads:
        for name in reversed(maps):
            if name not in outputs:
                continue
            module, output = outputs[name]
            tokens = isinstance(layer_layout(module, output), TokenLayout)
            if tokens and "norm" not in type(module).__name__.lower():
                continue
            if _reaches_logits(module, output, grads.get(name)):
                return name
    if maps:
        return maps[-1]
    seen = ", ".join(f"{name} {shape}" for name, shape, _ in found[-20:]) or "none"
    raise ValueError(
        f"{type(model).__name__} has no module whose output is a (B, C, h, w) or "
        f"(B, h, w, C) map with h·w > 1 or a square token grid (input "
        f"{tuple(example.shape[1:])}); pass layer= explicitly. Candidates (module, output "
        f"shape, last {min(len(found), 20)}): {seen}"
    )


#: The smallest target-layer output (h and w) whose maps can vary: one position
#: upsampled is a constant map (cambench.saliency.degenerate).
MIN_LAYER_SIZE = 2


def check_layer_size(h: int, w: int, where: str) -> None:
    """ValueError naming ``where`` (the model's config key) when a target layer's
    output (h, w) is below :data:`MIN_LAYER_SIZE` on a side."""
    if h < MIN_LAYER_SIZE or w < MIN_LAYER_SIZE:
        raise ValueError(
            f"{where}: the target layer's output is {h}×{w}, below the {MIN_LAYER_SIZE}×"
            f"{MIN_LAYER_SIZE} minimum: every map would be constant (one position "
            "upsampled). Use a larger dataset.image_size, or an earlier layer with the "
            "model's layer: key"
        )


def map_shape(module: nn.Module, output: object) -> tuple[int, int] | None:
    """``(h, w)`` of ``module``'s output read as a map (``None`` when it is not one)."""
    try:
        layout = layer_layout(module, output)
    except ValueError:
        return None
    if isinstance(layout, TokenLayout):
        return layout.h, layout.w
    h, w = output.shape[1:3] if isinstance(layout, ChannelsLast) else output.shape[2:]
    return int(h), int(w)


def default_layer_name(model: nn.Module, example: torch.Tensor | None = None) -> str:
    """The model's own ``default_target_layer``, a known torchvision default, a ViT's
    last block's first LayerNorm; otherwise, with an ``example`` input, the last
    module that outputs a map (:func:`probe_layer`), without one the last top-level
    child that contains a convolution (a guess). A wrapper's (``layer_prefix``) is its
    network's, behind the prefix."""
    # A str attribute is the model's own choice; a wrapper's computed one (a property)
    # is its network's static default, which the example may improve on: not read.
    own = inspect.getattr_static(model, "default_target_layer", None)
    if isinstance(own, str):
        return own
    wrapped = _wrapped(model)
    if wrapped is not None:
        prefix, net = wrapped
        return prefix + default_layer_name(net, example)
    name = getattr(model, "default_target_layer", None)
    if isinstance(name, str):
        return name
    known = _TORCHVISION_DEFAULTS.get(type(model).__name__)
    if known is not None and known in dict(model.named_modules()):
        return known
    vit = _vit_layer(model)
    if vit is not None:
        return vit
    if example is not None:
        return probe_layer(model, example)
    candidates = [n for n, child in model.named_children() if _contains_conv(child)]
    if not candidates:
        raise ValueError(
            f"{type(model).__name__} has no convolutional layer; pass layer= explicitly "
            "(or an example input, to find the last layer that outputs a map)"
        )
    return candidates[-1]


def layer_candidates(model: nn.Module, limit: int = 40) -> list[str]:
    """Dotted paths of modules that contain a convolution (for error messages)."""
    names = [n for n, m in model.named_modules() if n and _contains_conv(m)]
    return names[-limit:]


def resolve_layer(
    model: nn.Module, layer: str | nn.Module | None, example: torch.Tensor | None = None
) -> tuple[str, nn.Module]:
    """Return ``(dotted_path, module)`` for ``layer`` (``None`` = the default,
    :func:`default_layer_name`, probed on ``example`` where it needs to be)."""
    modules = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        for name, module in modules.items():
            if module is layer:
                return name, module
        raise ValueError(f"the given layer module is not part of {type(model).__name__}")
    name = default_layer_name(model, example) if layer is None else layer
    prefix = getattr(model, "layer_prefix", "")  # a wrapped network's paths may omit it
    if isinstance(name, str) and name and name not in modules and prefix + name in modules:
        name = prefix + name
    if not isinstance(name, str) or name not in modules or name == "":
        raise ValueError(
            f"layer {name!r} not found in {type(model).__name__}; candidates: "
            + ", ".join(layer_candidates(model))
        )
    return name, modules[name]
