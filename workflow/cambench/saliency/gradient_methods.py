"""Saliency from input gradients, and CA-Stream's own attention map (REFERENCES.md).

``gradient`` and ``guided_backprop`` differ only in the backward rule of the ReLUs,
which :mod:`cambench.models.guided` switches (the same mechanism gradient-aligned
training uses for its target). Neither uses a target layer.
"""

from __future__ import annotations

import torch
from torch import nn

from cambench.models.castream import CAStream
from cambench.models.guided import input_gradient
from cambench.saliency.registry import register


def gradient_map(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, guided: bool
) -> torch.Tensor:
    """``max_colour |∂y_c/∂x|`` (B, H, W), standard or guided."""
    return input_gradient(model, images, targets, guided=guided).abs().amax(1)


@register("gradient", uses_layer=False, relu=False)
def gradient(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: None
) -> torch.Tensor:
    """Gradient (Simonyan et al. 2014): ``|∂y_c/∂x|``, maximum over colour channels."""
    return gradient_map(model, images, targets, guided=False)


@register("guided_backprop", uses_layer=False, relu=False)
def guided_backprop(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: None
) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015): the gradient map with every
    ReLU's backward replaced by ``g · 1[a > 0] · 1[g > 0]``."""
    return gradient_map(model, images, targets, guided=True)


@register("castream_attention", uses_layer=False, relu=False)
def castream_attention(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: None
) -> torch.Tensor:
    """CA-Stream's last attention block: raw logits ``F q / √d`` as an (h, w) map.

    Class-agnostic (``targets`` are ignored). The logits, not the softmax, are the
    map: min-max normalization of either ranks pixels alike, and the logits keep
    the contrast that the softmax's exponential squeezes towards zero.
    """
    if not isinstance(model, CAStream):
        raise ValueError(
            f"castream_attention needs a CA-Stream model (kind: castream), got {type(model).__name__}"
        )
    with torch.no_grad():
        model(images)
    return model.last_attention
