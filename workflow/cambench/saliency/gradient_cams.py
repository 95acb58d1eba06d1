"""CAM methods weighted by the gradient ``G = ∂y_c/∂A`` (REFERENCES.md, CAM family).

Each needs one forward pass and a backward pass through the layers after the target
layer only (see :func:`cambench.saliency.core.activations_and_gradients`).
"""

from __future__ import annotations

import torch
from torch import nn

from cambench.saliency.core import activations, activations_and_gradients, weighted_sum
from cambench.saliency.registry import register


@register("gradcam")
def gradcam(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: nn.Module
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): ``α_k = mean_ij G^k_ij``."""
    acts, grads, _ = activations_and_gradients(model, images, targets, layer)
    return weighted_sum(grads.mean((2, 3)), acts)


@register("gradcampp", defaults={"eps": 1e-6})
def gradcampp(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: nn.Module, eps: float
) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018), with the exponential-output closed form.

    ``a = G² / (2 G² + Σ_ab A_ab G³ + eps)``, zero where ``G = 0``. ``eps = 1e-6`` is
    pytorch-grad-cam's, which the thesis used for its baselines; with gradients of
    order 1e-3 it is not negligible. ``eps = 0`` gives the plain formula (0 where the
    denominator is 0).
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
    """XGrad-CAM (Fu et al. 2020): ``α_k = Σ G A / (Σ A + ε)``."""
    acts, grads, _ = activations_and_gradients(model, images, targets, layer)
    weights = (grads * acts).sum((2, 3)) / (acts.sum((2, 3)) + 1e-7)
    return weighted_sum(weights, acts)


@register("layercam")
def layercam(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: nn.Module
) -> torch.Tensor:
    """Layer-CAM (Jiang et al. 2021): ``S = Σ_k ReLU(G^k) ⊙ A^k``."""
    acts, grads, _ = activations_and_gradients(model, images, targets, layer)
    return (grads.clamp_min(0) * acts).sum(1)


def _gap_linear_head(model: nn.Module, channels: int) -> nn.Linear:
    head = getattr(model, "fc", None)
    pools = [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    if isinstance(head, nn.Linear) and head.in_features == channels and pools:
        return head
    raise ValueError(
        f"'cam' needs a global-average-pooling → Linear head ('fc' with {channels} inputs) "
        f"after the target layer; {type(model).__name__} has none"
    )


@register("cam")
def cam(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: nn.Module
) -> torch.Tensor:
    """CAM (Zhou et al. 2016): ``S = Σ_k w_{c,k} A^k`` with the classifier's weights."""
    acts, _ = activations(model, images, layer, targets)
    head = _gap_linear_head(model, acts.shape[1])
    return weighted_sum(head.weight[targets], acts)
