"""Saliency methods behind one call: ``explain(method, model, images, targets)``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cambench.saliency import (  # noqa: F401  (registers methods)
    baselines,
    gradient_cams,
    gradient_methods,
    opticam,
    score_cams,
)
from cambench.saliency.core import finalize_maps, frozen_eval, minmax_normalize
from cambench.saliency.layers import default_layer_name, resolve_layer
from cambench.saliency.registry import METHODS, Method, get_method

__all__ = [
    "METHODS",
    "Method",
    "default_layer_name",
    "explain",
    "finalize_maps",
    "get_method",
    "minmax_normalize",
    "resolve_layer",
]


def explain(
    method: str,
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: str | nn.Module | None = None,
    **params: Any,
) -> torch.Tensor:
    """Saliency maps (B, H, W) float32 in [0, 1] of ``targets`` for ``images``.

    ``images`` are (B, 3, H, W) in [0, 1] on the model's device; ``layer`` is a dotted
    module path, a module, or ``None`` for the model's default target layer. The
    model's mode, hooks and ``requires_grad`` flags are left as found.
    """
    spec = get_method(method)
    params = spec.resolve_params(params)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"images must be a (B, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}"
        )
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [0, 1], got dtype {images.dtype}")
    targets = torch.as_tensor(targets, device=images.device)
    if targets.shape != (images.shape[0],) or targets.dtype != torch.int64:
        raise ValueError(
            f"targets must be int64 of shape ({images.shape[0]},), got {targets.dtype} {tuple(targets.shape)}"
        )
    target_layer = resolve_layer(model, layer)[1] if spec.uses_layer else None
    with frozen_eval(model):
        raw = spec(model, images.detach(), targets, target_layer, **params)
    return finalize_maps(raw, tuple(images.shape[-2:]), relu=spec.relu)
