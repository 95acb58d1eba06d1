"""Saliency methods behind one call: ``explain(method, model, images, targets)``.

``method`` is a registered name (``sorted(METHODS)``; definitions in each function's
docstring and in docs/methods.md) or a plain function
``fn(model, images, targets, layer, **params) -> S`` returning raw scores (B, h, w) at
any resolution. Either way the map is ``n(up(ReLU(S)))`` (B, H, W) in [0, 1]:

>>> import torch
>>> from cambench.models.small_resnet import SmallResNet
>>> from cambench.saliency import explain
>>> from cambench.saliency.core import activations
>>> _ = torch.manual_seed(0)
>>> model = SmallResNet(num_classes=10, width=8, blocks=(1, 1, 1, 1)).eval()
>>> images, targets = torch.rand(2, 3, 32, 32), torch.tensor([3, 7])
>>> def mean_activation(model, images, targets, layer):
...     acts, _ = activations(model, images, layer, targets)
...     return acts.mean(1)
>>> explain(mean_activation, model, images, targets).shape
torch.Size([2, 32, 32])

A plug-in method is registered under a name (which the workflow's ``methods:`` can
then use) with the :func:`register` decorator; ``defaults`` are its parameters, a
name already taken is a ValueError::

    from cambench.saliency import register

    @register("mean_activation", defaults={"power": 1})
    def mean_activation(model, images, targets, layer, power):
        acts, _ = activations(model, images, layer, targets)
        return acts.pow(power).mean(1)

A method's raw output must be finite and (B, h, w) for the B images given; anything
else is a ValueError naming the method and the shape it returned.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cambench.models.layers import LAYOUTS, default_layer_name, forced_layout, resolve_layer
from cambench.saliency import (  # noqa: F401  (registers methods)
    adapters,
    attention,
    attribution,
    baselines,
    degenerate,
    eigen_cams,
    fullgrad,
    gradient_cams,
    gradient_methods,
    hires_cams,
    opticam,
    oracle,
    score_cams,
    smooth_cams,
)
from cambench.saliency.core import all_finite, finalize_maps, frozen_eval, minmax_normalize
from cambench.saliency.registry import METHODS, Method, MethodFn, get_method, register

__all__ = [
    "LAYOUTS",
    "METHODS",
    "Method",
    "default_layer_name",
    "explain",
    "explain_with_flags",
    "explain_with_scores",
    "finalize_maps",
    "get_method",
    "minmax_normalize",
    "register",
    "resolve_layer",
]


def _method_and_params(
    method: str | Method | MethodFn, params: dict[str, Any]
) -> tuple[Method, dict]:
    """The registered method (its defaults overlaid with ``params``), or a plain function
    wrapped as one (ReLU on, target layer resolved, ``params`` passed as given)."""
    if isinstance(method, str):
        spec = get_method(method)
    elif isinstance(method, Method):
        spec = method
    elif callable(method):
        name = getattr(method, "__qualname__", type(method).__qualname__)
        return Method(name, method), dict(params)
    else:
        raise ValueError(f"method must be a name or a function, got {type(method).__name__}")
    return spec, spec.resolve_params(params)


def _check_raw(raw: object, batch: int, spec: Method) -> None:
    """ValueError unless ``raw`` is a finite (batch, h, w) tensor, naming the method
    (and its file, for a plug-in's)."""
    name = spec.name
    plugin = METHODS.get(name) is spec and spec.source  # a registered plug-in method
    where = f" (plug-in {spec.source})" if plugin else ""
    shape = tuple(raw.shape) if isinstance(raw, torch.Tensor) else type(raw).__name__
    if not isinstance(raw, torch.Tensor) or raw.ndim != 3 or raw.shape[0] != batch:
        raise ValueError(
            f"saliency method {name!r} returned {shape}; expected a ({batch}, h, w) tensor{where}"
        )
    if not all_finite(raw):
        raise ValueError(
            f"saliency method {name!r} returned non-finite values (NaN or inf), shape {shape}{where}"
        )


def _checked_masks(spec: Method, masks: torch.Tensor | None, images: torch.Tensor) -> torch.Tensor:
    """``masks`` as a (B, H, W) tensor on the images' device, or a ValueError naming the
    method that needs them."""
    b, _, h, w = images.shape
    if masks is None:
        raise ValueError(
            f"saliency method {spec.name!r} reads the images' object masks: pass "
            f"object_masks=(B, H, W) (a dataset with masks), got none"
        )
    masks = torch.as_tensor(masks, device=images.device)
    if tuple(masks.shape) != (b, h, w):
        raise ValueError(
            f"saliency method {spec.name!r}: object_masks must be ({b}, {h}, {w}) like the images, "
            f"got {tuple(masks.shape)}"
        )
    return masks


def explain(
    method: str | MethodFn,
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: str | nn.Module | None = None,
    layout: str | None = None,
    object_masks: torch.Tensor | None = None,
    **params: Any,
) -> torch.Tensor:
    """Saliency maps (B, H, W) float32 in [0, 1] of ``targets`` for ``images``.

    ``method`` is a registered name or a function (see the module's docstring).

    ``images`` are (B, 3, H, W) in [0, 1] on the model's device, B ≥ 1; ``targets``
    class indices in [0, num_classes) (the number of classes is the logits' width,
    checked at each method's first forward; ``fakecam`` and ``random`` run no forward).
    Non-finite logits or gradients are a ValueError, not all-zero maps. ``layer`` is a
    dotted module path, a module, or ``None`` for the model's default target layer
    (:func:`default_layer_name`; where the model names none, the last layer that
    outputs a map, found by a forward of ``images[:1]``). The layer's output is read
    as a (B, C, h, w) map whatever its layout: (B, C, h, w), (B, h, w, C) where the
    layer's channel counts show it, or ViT tokens (B, [1 +] h·w, C); ``layout``
    (``"channels_first"``, ``"channels_last"`` or ``"tokens"``) forces one instead.
    The model's mode, hooks and ``requires_grad`` flags are left as found.
    ``object_masks`` (B, H, W), the images' object masks, are given to a method that
    reads them (``mask_oracle``; a ValueError when missing) and ignored by the others
    (a keyword of its own: RISE's ``masks`` is the number of random masks).
    """
    spec, raw, size = _raw_scores(
        method, model, images, targets, layer, layout, params, object_masks
    )
    return finalize_maps(raw, size, relu=spec.relu)


def explain_with_flags(
    method: str | MethodFn,
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: str | nn.Module | None = None,
    layout: str | None = None,
    object_masks: torch.Tensor | None = None,
    **params: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`explain`'s maps and, per image, whether its map is degenerate: (B,) uint8
    codes of :func:`cambench.saliency.degenerate.classify` (0 fine, 1 all zero,
    2 constant), from the raw scores before normalization hides it."""
    spec, raw, size = _raw_scores(
        method, model, images, targets, layer, layout, params, object_masks
    )
    return finalize_maps(raw, size, relu=spec.relu), degenerate.classify(raw, relu=spec.relu)


def explain_with_scores(
    method: str | MethodFn,
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: str | nn.Module | None = None,
    layout: str | None = None,
    object_masks: torch.Tensor | None = None,
    **params: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`explain`'s maps and the method's raw scores (B, H, W) float32, upsampled
    bilinearly to the images' size but before ReLU and normalization: signed where the
    method's scores are (the data randomization test correlates them with and without
    absolute values)."""
    spec, raw, size = _raw_scores(
        method, model, images, targets, layer, layout, params, object_masks
    )
    scores = raw.detach().float()
    if tuple(scores.shape[-2:]) != tuple(size):
        scores = F.interpolate(
            scores.unsqueeze(1), size=size, mode="bilinear", align_corners=False
        ).squeeze(1)
    return finalize_maps(raw, size, relu=spec.relu), scores


def _raw_scores(
    method: str | MethodFn,
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: str | nn.Module | None,
    layout: str | None,
    params: dict[str, Any],
    object_masks: torch.Tensor | None = None,
) -> tuple[Method, torch.Tensor, tuple[int, int]]:
    """The method, its checked raw scores (B, h, w) and the images' (H, W): the inputs
    checked as :func:`explain` documents, the method run with the model frozen."""
    spec, params = _method_and_params(method, params)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"images must be a (B, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}"
        )
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [0, 1], got dtype {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (0 images); explain needs at least one")
    low, high = torch.aminmax(images.detach())
    if not (low >= 0 and high <= 1):
        raise ValueError(
            f"images must be in [0, 1], got values in [{float(low):.4g}, {float(high):.4g}] "
            "(divide 0-255 images by 255)"
        )
    targets = torch.as_tensor(targets, device=images.device)
    if targets.shape != (images.shape[0],) or targets.dtype != torch.int64:
        raise ValueError(
            f"targets must be int64 of shape ({images.shape[0]},), got {targets.dtype} {tuple(targets.shape)}"
        )
    if (targets < 0).any():
        raise ValueError(
            f"target {int(targets[targets < 0][0])} is negative: targets are class indices "
            "in [0, num_classes)"
        )
    images = images.detach()
    if spec.needs_masks:
        params = {**params, "object_masks": _checked_masks(spec, object_masks, images)}
    target_layer = resolve_layer(model, layer, images)[1] if spec.uses_layer else None
    with frozen_eval(model), forced_layout(target_layer, layout):
        raw = spec(model, images, targets, target_layer, **params)
    _check_raw(raw, images.shape[0], spec)
    return spec, raw, tuple(images.shape[-2:])
