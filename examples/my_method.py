"""An example cambench plug-in: a saliency method of your own.

``plugins: [examples/my_method.py]`` in an experiment file imports it in every job;
then ``methods: {my_method: {sigma: 0.3}}`` runs it like a built-in method. A method
returns raw scores (B, h, w); cambench applies ReLU, bilinear upsampling to the image
size and per-image min-max normalization.
"""

from __future__ import annotations

import torch
from torch import nn

from cambench.saliency import register
from cambench.saliency.core import activations_and_gradients


@register("my_method", defaults={"sigma": 0.5})
def my_method(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: nn.Module, sigma: float
) -> torch.Tensor:
    """Grad-CAM with softened channel weights: ``S = Σ_k softmax_k(α / σ) A^k``, ``α_k``
    Grad-CAM's (the spatial mean of the gradient), normalized by its largest magnitude.

    A small ``sigma`` keeps the channels with the largest Grad-CAM weight; a large one
    averages every channel.
    """
    acts, grads, _ = activations_and_gradients(model, images, targets, layer)
    alpha = grads.mean((2, 3))
    alpha = alpha / alpha.abs().amax(1, keepdim=True).clamp_min(1e-12)
    weights = torch.softmax(alpha / sigma, dim=1)
    return torch.einsum("bk,bkhw->bhw", weights, acts)
