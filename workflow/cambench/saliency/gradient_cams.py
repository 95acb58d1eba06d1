"""CAM and the CAMs weighted by the gradient ``G^k = ∂y_c/∂A^k``.

Notation (docs/methods.md): ``x`` the image in [0, 1], ``f`` the classifier with its
normalization, ``y_c`` the logit of class ``c``, ``A^k`` channel ``k`` of the target
layer's output (h × w), ``G^k = ∂y_c/∂A^k``; each method returns a raw map ``S``
(h × w) and :func:`cambench.saliency.explain` makes it ``n(up(ReLU(S)))`` (bilinear
upsampling to the input size, per-image min-max normalization).

The gradient CAMs need one forward pass and a backward pass through the layers after
the target layer only (see :func:`cambench.saliency.core.activations_and_gradients`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cambench.saliency.core import activations, activations_and_gradients, weighted_sum
from cambench.saliency.registry import register


@register("gradcam")
def gradcam(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: nn.Module
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): channel weights are the spatial mean of the gradient.

    ``S = Σ_k α_k A^k`` with ``α_k = (1 / hw) Σ_ij G^k_ij``.

    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017, https://arxiv.org/abs/1610.02391.

    On a model whose target layer feeds global average pooling and a linear layer,
    ``G^k`` is the constant ``w_{c,k} / hw``, so Grad-CAM equals CAM:

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> model, images, targets = example_inputs()  # a seeded SmallResNet, 2 images
    >>> maps = explain("gradcam", model, images, targets, layer="layer4")
    >>> maps.shape
    torch.Size([2, 32, 32])
    >>> maps.allclose(explain("cam", model, images, targets), atol=1e-5)
    True
    """
    acts, grads, _ = activations_and_gradients(model, images, targets, layer)
    return weighted_sum(grads.mean((2, 3)), acts)


@register("gradcampp", defaults={"eps": 1e-6})
def gradcampp(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: nn.Module, eps: float
) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018): pixel-weighted positive gradients as channel weights.

    ``S = Σ_k α_k A^k`` with ``α_k = Σ_ij a^k_ij ReLU(G^k_ij)`` and, in the paper's
    closed form for an exponential output (higher derivatives as powers of ``G``),

        ``a^k_ij = (G^k_ij)² / (2 (G^k_ij)² + Σ_ab A^k_ab (G^k_ij)³ + eps)``,

    ``a^k_ij = 0`` where ``G^k_ij = 0`` or the denominator is 0. ``eps = 1e-6`` is
    pytorch-grad-cam's, which the thesis used for its baselines; with gradients of
    order 1e-3 it is not negligible. ``eps = 0`` gives the plain formula.

    Chattopadhay et al., "Grad-CAM++: Generalized Gradient-based Visual Explanations
    for Deep Convolutional Networks", WACV 2018, https://arxiv.org/abs/1710.11063.

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> model, images, targets = example_inputs()  # a seeded SmallResNet, 2 images
    >>> maps = explain("gradcampp", model, images, targets, eps=0)  # the plain formula
    >>> maps.shape, bool(maps.min() >= 0), bool(maps.max() <= 1)
    (torch.Size([2, 32, 32]), True, True)
    """
    acts, grads, _ = activations_and_gradients(model, images, targets, layer)
    g2 = grads.pow(2)
    denom = 2 * g2 + acts.sum((2, 3), keepdim=True) * grads.pow(3) + eps
    valid = (grads != 0) & (denom != 0)
    alpha = torch.where(valid, g2 / torch.where(valid, denom, torch.ones_like(denom)), 0.0)
    return weighted_sum((alpha * grads.clamp_min(0)).sum((2, 3)), acts)


@register("xgradcam")
def xgradcam(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: nn.Module
) -> torch.Tensor:
    """XGrad-CAM (Fu et al. 2020): gradients weighted by the normalized activations.

    ``S = Σ_k α_k A^k`` with ``α_k = Σ_ij G^k_ij A^k_ij / (Σ_ij A^k_ij + 1e-7)``
    (the ``1e-7`` as pytorch-grad-cam).

    Fu et al., "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation
    of CNNs", BMVC 2020, https://arxiv.org/abs/2008.02312.

    Where ``G^k`` is spatially constant (global average pooling → linear head) the
    weights are Grad-CAM's:

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> model, images, targets = example_inputs()  # a seeded SmallResNet, 2 images
    >>> xgrad = explain("xgradcam", model, images, targets)
    >>> xgrad.allclose(explain("gradcam", model, images, targets), atol=1e-5)
    True
    """
    acts, grads, _ = activations_and_gradients(model, images, targets, layer)
    weights = (grads * acts).sum((2, 3)) / (acts.sum((2, 3)) + 1e-7)
    return weighted_sum(weights, acts)


@register("layercam")
def layercam(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: nn.Module
) -> torch.Tensor:
    """Layer-CAM (Jiang et al. 2021): activations weighted pixel by pixel by the positive gradient.

    ``S = Σ_k ReLU(G^k) ⊙ A^k`` (``⊙`` elementwise), usable at shallow layers where
    one weight per channel is too coarse.

    Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for
    Localization", IEEE TIP 30, 2021, https://doi.org/10.1109/TIP.2021.3089943.

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> model, images, targets = example_inputs()  # a seeded SmallResNet, 2 images
    >>> explain("layercam", model, images, targets, layer="layer2").shape
    torch.Size([2, 32, 32])
    """
    acts, grads, _ = activations_and_gradients(model, images, targets, layer)
    return (grads.clamp_min(0) * acts).sum(1)


def gap_linear_head(model: nn.Module, acts: torch.Tensor, logits: torch.Tensor) -> nn.Linear:
    """The classifier of a model that is global average pooling → Linear after the
    target layer, found by structure and checked on the batch.

    The head is the last ``nn.Linear`` with ``in_features = C`` (channels of ``A``)
    and ``out_features`` = the number of classes, accepted only if
    ``logits ≈ GAP(A) @ W.T + b`` (a Dropout in eval mode between them is fine):
    whatever the layers' names, CAM is defined exactly where that holds.
    """
    channels, classes = acts.shape[1], logits.shape[1]
    linears = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and m.in_features == channels and m.out_features == classes
    ]
    if not linears:
        raise ValueError(
            f"'cam' needs a global-average-pooling → Linear head (a Linear with {channels} "
            f"inputs and {classes} outputs) after the target layer; "
            f"{type(model).__name__} has none"
        )
    name, head = linears[-1]
    pooled = F.linear(acts.mean((2, 3)), head.weight, head.bias)
    scale = float(logits.abs().max()) + 1.0
    if not torch.allclose(pooled, logits.to(pooled.dtype), rtol=1e-3, atol=1e-4 * scale):
        raise ValueError(
            f"'cam' needs a global-average-pooling → Linear head after the target layer; "
            f"{type(model).__name__} is not GAP → Linear after it (its logits are not "
            f"GAP(A) @ W.T + b of its Linear {name!r})"
        )
    return head


@register("cam")
def cam(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: nn.Module
) -> torch.Tensor:
    """CAM (Zhou et al. 2016): activations weighted by the classifier's weights of the class.

    ``S = Σ_k w_{c,k} A^k`` where ``w_{c,k}`` is the weight of the linear classifier
    from channel ``k`` (after global average pooling) to class ``c``, so
    ``y_c = (1 / hw) Σ_ij S_ij + b_c``. Defined only for models whose target layer
    feeds global average pooling and then a Linear (ResNet's ``fc``, MobileNet's
    ``classifier.1``, …), found by structure and checked on the batch
    (:func:`gap_linear_head`); others are a ValueError.

    Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016,
    https://arxiv.org/abs/1512.04150.

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> model, images, targets = example_inputs()  # a seeded SmallResNet, 2 images
    >>> explain("cam", model, images, targets).shape
    torch.Size([2, 32, 32])
    """
    acts, logits = activations(model, images, targets, layer)
    head = gap_linear_head(model, acts, logits)
    return weighted_sum(head.weight[targets], acts)
