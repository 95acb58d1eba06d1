"""The ground-truth reference: the object mask itself as a saliency map."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cambench.saliency.registry import ParamError, check_number, register

# The Gaussian is cut at this many standard deviations (scipy.ndimage's default).
TRUNCATE = 4.0


def _check(params: dict[str, Any]) -> None:
    check_number(params, "blur_sigma", 0.0, 1e6)
    if params["blur_sigma"] > 0 and int(TRUNCATE * params["blur_sigma"] + 0.5) < 1:
        raise ParamError("blur_sigma", f"{params['blur_sigma']!r} is too small to blur (use 0)")


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, H, W) maps blurred by a separable Gaussian of standard deviation ``sigma``
    pixels, cut at ``TRUNCATE`` σ, the border mirrored (``d c b | a b c d``, scipy's
    ``mode="mirror"``); radius must be below the maps' size."""
    radius = int(TRUNCATE * sigma + 0.5)
    h, w = maps.shape[-2:]
    if radius >= min(h, w):
        raise ValueError(
            f"blur_sigma {sigma:g} needs a {2 * radius + 1}-pixel Gaussian, larger than the "
            f"{h}×{w} images"
        )
    x = torch.arange(-radius, radius + 1, dtype=torch.float64, device=maps.device)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = (g / g.sum()).to(maps.dtype)
    out = F.pad(maps.unsqueeze(1), (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, g.view(1, 1, 1, -1))
    out = F.conv2d(out, g.view(1, 1, -1, 1))
    return out.squeeze(1)


@register(
    "mask_oracle",
    defaults={"blur_sigma": 0.0},
    uses_layer=False,
    relu=False,
    check=_check,
    needs_masks=True,
)
def mask_oracle(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: None,
    object_masks: torch.Tensor,
    blur_sigma: float,
) -> torch.Tensor:
    r"""Mask oracle: the image's ground-truth object mask as the map, a reference.

    .. math::
        S = G_\sigma * M

    with :math:`M` the binary object mask (1 inside the object) and :math:`G_\sigma`
    a Gaussian of standard deviation ``blur_sigma`` pixels (0: no blur; cut at 4 σ,
    border mirrored); the map is ``n(S)``. It looks at neither the model nor the class:
    the upper reference for localization metrics (pointing game, energy pointing game,
    IoU) and for remove-and-retrain, a sanity baseline like Fake-CAM (never bold). Only
    on datasets with object masks (the workflow refuses it elsewhere). The idea of a
    ground-truth "oracle" map is used e.g. by Hooker et al., "A benchmark for
    interpretability methods in deep neural networks", NeurIPS 2019,
    https://arxiv.org/abs/1806.10758 (no paper defines this exact map).

    >>> import torch
    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> model, images, targets = example_inputs()
    >>> masks = torch.zeros(2, *images.shape[-2:], dtype=torch.bool)
    >>> masks[:, 4:8, 4:8] = True
    >>> maps = explain("mask_oracle", model, images, targets, object_masks=masks)
    >>> maps.equal(masks.float())
    True
    >>> blurred = explain("mask_oracle", model, images, targets, object_masks=masks, blur_sigma=1.0)
    >>> bool(blurred[0, 6, 6] == 1), bool(0 < blurred[0, 3, 6] < 1)
    (True, True)
    """
    maps = object_masks.to(device=images.device, dtype=torch.float32)
    if blur_sigma > 0:
        maps = gaussian_blur(maps, float(blur_sigma))
    return maps
