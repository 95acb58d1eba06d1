"""HiResCAM and Grad-CAM element-wise: the gradient multiplies the activations pixel
by pixel instead of being averaged into one weight per channel.

Notation as in :mod:`cambench.saliency.gradient_cams`: ``A^k`` channel ``k`` of the
target layer's output, ``G^k = ∂y_c/∂A^k``, ``⊙`` the elementwise product. Both need
one forward pass and a backward pass down to the target layer
(:func:`cambench.saliency.core.activations_and_gradients`), on any layer layout.
"""

from __future__ import annotations

import torch
from torch import nn

from cambench.saliency.core import activations_and_gradients
from cambench.saliency.registry import register


@register("hirescam")
def hirescam(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: nn.Module
) -> torch.Tensor:
    """HiResCAM (Draelos & Carin 2020): the sum over channels of gradient ⊙ activation.

    ``S = Σ_k G^k ⊙ A^k``. Where the layers after the target layer are global average
    pooling and a linear classifier, ``y_c = Σ_ij S_ij + b_c``: the map shows
    exactly the locations the score is made of, which Grad-CAM's averaged gradient
    does not guarantee elsewhere. As pytorch-grad-cam's ``HiResCAM``.

    Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of
    convolutional neural networks", 2020, https://arxiv.org/abs/2011.08891.

    On a GAP → linear head the gradient is the same at every position, so the map
    equals Grad-CAM's:

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> model, images, targets = example_inputs()  # a seeded SmallResNet, 2 images
    >>> maps = explain("hirescam", model, images, targets, layer="layer4")
    >>> maps.allclose(explain("gradcam", model, images, targets, layer="layer4"), atol=1e-5)
    True
    """
    acts, grads, _ = activations_and_gradients(model, images, targets, layer)
    return (grads * acts).sum(1)


@register("gradcam_elementwise")
def gradcam_elementwise(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: nn.Module
) -> torch.Tensor:
    """Grad-CAM element-wise (pytorch-grad-cam): HiResCAM with a ReLU on each product.

    ``S = Σ_k ReLU(G^k ⊙ A^k)``: only the positive contributions of each channel at
    each position count, so a channel's negative evidence cannot cancel another's
    positive one. A variant of HiResCAM that pytorch-grad-cam introduced as
    ``GradCAMElementWise``; no paper of its own (HiResCAM's is the closest:
    Draelos & Carin 2020, https://arxiv.org/abs/2011.08891).

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> model, images, targets = example_inputs()  # a seeded SmallResNet, 2 images
    >>> explain("gradcam_elementwise", model, images, targets, layer="layer3").shape
    torch.Size([2, 32, 32])
    """
    acts, grads, _ = activations_and_gradients(model, images, targets, layer)
    return (grads * acts).clamp_min(0).sum(1)
