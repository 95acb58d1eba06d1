"""Saliency from input gradients, and CA-Stream's own attention map.

``gradient`` and ``guided_backprop`` differ only in the backward rule of the ReLUs,
which :mod:`cambench.models.guided` switches (the same mechanism gradient-aligned
training uses for its target). Neither uses a target layer.
"""

from __future__ import annotations

import torch
from torch import nn

from cambench.models.castream import CAStream
from cambench.models.guided import input_gradient
from cambench.saliency.core import check_gradients, check_logits
from cambench.saliency.registry import register


def gradient_map(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, guided: bool
) -> torch.Tensor:
    """``max_colour |∂y_c/∂x|`` (B, H, W), standard or guided.

    The logits are checked against ``targets`` (:func:`check_logits`) by a hook on the
    model for the one forward, and the gradients for NaN/inf.
    """
    handle = model.register_forward_hook(lambda m, i, logits: check_logits(logits, targets))
    try:
        grads = input_gradient(model, images, targets, guided=guided)
    finally:
        handle.remove()
    check_gradients(grads)
    return grads.abs().amax(1)


@register("gradient", uses_layer=False, relu=False)
def gradient(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: None
) -> torch.Tensor:
    """Gradient (Simonyan et al. 2014): ``|∂y_c/∂x|``, maximum over colour channels.

    ``S_ij = max_colour |∂y_c/∂x_{colour,ij}|`` at the input's resolution; no ReLU (the
    map is ``n(S)``). The gradient is taken with respect to ``x`` in [0, 1], through
    the model's normalization.

    Simonyan et al., "Deep Inside Convolutional Networks: Visualising Image
    Classification Models and Saliency Maps", ICLR Workshop 2014,
    https://arxiv.org/abs/1312.6034.

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> model, images, targets = example_inputs()  # a seeded SmallResNet, 2 images
    >>> maps = explain("gradient", model, images, targets)
    >>> maps.amin((1, 2)).tolist(), maps.amax((1, 2)).tolist()  # n: each spans [0, 1]
    ([0.0, 0.0], [1.0, 1.0])
    """
    return gradient_map(model, images, targets, guided=False)


@register("guided_backprop", uses_layer=False, relu=False)
def guided_backprop(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: None
) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015): the gradient map with every
    ReLU's backward replaced by ``g · 1[a > 0] · 1[g > 0]``.

    ``S_ij = max_colour |ĝ_{colour,ij}|`` with ``ĝ`` the gradient ``∂y_c/∂x`` computed
    with a guided backward pass: every ``nn.ReLU`` passes on only the positive part of
    its incoming gradient ``g``, where its input ``a`` was positive (``nn.ReLU6``: and
    below 6); no ReLU on ``S``. Models with other activation modules are a ValueError
    (:func:`cambench.models.guided.check_guidable`).

    Springenberg et al., "Striving for Simplicity: The All Convolutional Net", ICLR
    Workshop 2015, https://arxiv.org/abs/1412.6806.

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> model, images, targets = example_inputs()  # a seeded SmallResNet, 2 images
    >>> explain("guided_backprop", model, images, targets).shape
    torch.Size([2, 32, 32])
    """
    return gradient_map(model, images, targets, guided=True)


@register("castream_attention", uses_layer=False, relu=False)
def castream_attention(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: None
) -> torch.Tensor:
    """CA-Stream's own map: the last attention block's raw logits as an (h, w) map.

    Torres et al., "CA-Stream: Attention-based pooling for interpretable image
    recognition", CVPR XAI4CV workshop 2024, https://arxiv.org/abs/2404.14996. Block
    ``ℓ`` attends from the class token ``q_ℓ`` (dimension ``d_ℓ``) over the feature
    map ``F_ℓ`` (``h·w`` rows of ``d_ℓ`` channels) with weights
    ``a_ℓ = softmax(F_ℓ q_ℓ / √d_ℓ)``; the map is the last block's
    ``F q / √d`` reshaped to ``h × w``, before the softmax (see
    :mod:`cambench.models.castream`).

    Class-agnostic (``targets`` are ignored). The logits, not the softmax, are the
    map: min-max normalization of either ranks pixels alike, and the logits keep
    the contrast that the softmax's exponential squeezes towards zero.

    >>> import torch
    >>> from cambench.models import build_model
    >>> from cambench.models.castream import CAStream
    >>> from cambench.saliency import explain
    >>> _ = torch.manual_seed(0)
    >>> base = build_model({"width": 4, "blocks": [1, 1, 1, 1]}, num_classes=3).eval()
    >>> model = CAStream(base).eval()
    >>> maps = explain("castream_attention", model, torch.rand(2, 3, 32, 32), torch.tensor([0, 2]))
    >>> tuple(maps.shape), float(maps.min()), float(maps.max())
    ((2, 32, 32), 0.0, 1.0)
    """
    if not isinstance(model, CAStream):
        raise ValueError(
            f"castream_attention needs a CA-Stream model (kind: castream), got {type(model).__name__}"
        )
    with torch.no_grad():
        _, attention = model.forward_with_attention(images)
    return attention
