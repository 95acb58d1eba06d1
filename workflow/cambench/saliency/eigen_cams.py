"""Eigen-CAM and EigenGrad-CAM: the first principal component of the target layer's
features (or of gradient ⊙ features) as the map.

Notation as in :mod:`cambench.saliency.gradient_cams`. The projection is one batched
SVD on the device (:func:`first_component`), no loop over images.
"""

from __future__ import annotations

import torch
from torch import nn

from cambench.saliency.core import activations, activations_and_gradients
from cambench.saliency.registry import register


def first_component(features: torch.Tensor) -> torch.Tensor:
    """Projection of each image's features on their first principal direction, (B, h, w).

    ``features`` (B, K, h, w) are read per image as ``X`` (hw × K, one row per
    position), centred per channel (``X − mean over positions``, as pytorch-grad-cam);
    ``S = X v₁`` with ``v₁`` the first right singular vector of the centred ``X``.

    An SVD fixes ``v₁`` only up to its sign (``U Σ Vᵀ = (−U) Σ (−V)ᵀ``), and which sign
    LAPACK returns varies with the library build. pytorch-grad-cam's ``EigenCAM``
    keeps whatever sign its SVD returns; its ``SegEigenCAM`` fixes it with the rule of
    Chung & Ying 2025 (Eq. 13; https://doi.org/10.3390/app15137562): flip ``S`` when
    ``|min S| > |max S|``, so that the salient extreme is positive. cambench applies
    that rule always, so the map does not depend on the linear-algebra library.
    """
    b, k, h, w = features.shape
    x = features.flatten(2).transpose(1, 2).float()  # (B, hw, K)
    x = x - x.mean(1, keepdim=True)
    v1 = torch.linalg.svd(x, full_matrices=False).Vh[:, 0, :]  # (B, K)
    proj = torch.einsum("bnk,bk->bn", x, v1)
    flip = proj.amin(1).abs() > proj.amax(1).abs()
    return torch.where(flip.view(-1, 1), -proj, proj).view(b, h, w)


@register("eigencam")
def eigencam(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: nn.Module
) -> torch.Tensor:
    """Eigen-CAM (Muhammad & Yeasin 2020): the target layer's first principal component.

    ``S = X v₁``: ``X`` the layer's output per image (positions × channels, centred
    per channel), ``v₁`` its first right singular vector, sign fixed so that
    ``|max S| ≥ |min S|`` (:func:`first_component`). Class-agnostic: the target class
    does not enter (one forward pass, no gradient). As pytorch-grad-cam's ``EigenCAM``
    up to the sign convention.

    Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal Components",
    IJCNN 2020, https://arxiv.org/abs/2008.00299.

    >>> import torch
    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> model, images, targets = example_inputs()  # a seeded SmallResNet, 2 images
    >>> maps = explain("eigencam", model, images, targets, layer="layer3")
    >>> other = explain("eigencam", model, images, (targets + 1) % 10, layer="layer3")
    >>> torch.equal(maps, other)  # the same for every class
    True
    """
    acts, _ = activations(model, images, targets, layer)
    return first_component(acts)


@register("eigengradcam")
def eigengradcam(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: nn.Module
) -> torch.Tensor:
    """EigenGrad-CAM (pytorch-grad-cam): Eigen-CAM of gradient ⊙ activations.

    ``S = X v₁`` as Eigen-CAM (:func:`first_component`) with ``X`` built from
    ``G^k ⊙ A^k`` instead of ``A^k``, which makes it class-specific. A variant that
    pytorch-grad-cam introduced as ``EigenGradCAM`` over Eigen-CAM (Muhammad & Yeasin,
    IJCNN 2020, https://arxiv.org/abs/2008.00299); no paper of its own.

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> model, images, targets = example_inputs()  # a seeded SmallResNet, 2 images
    >>> explain("eigengradcam", model, images, targets, layer="layer3").shape
    torch.Size([2, 32, 32])
    """
    acts, grads, _ = activations_and_gradients(model, images, targets, layer)
    return first_component(grads * acts)
