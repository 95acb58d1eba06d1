"""Sanity baselines that look at neither the model nor the class."""

from __future__ import annotations

import torch
from torch import nn

from cambench.saliency.registry import register

_MASK32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """An integer hash of int64 values in [0, 2^32) (no overflow in int64)."""
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    return (x >> 16) ^ x


@register("fakecam", uses_layer=False, relu=False)
def fakecam(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: None
) -> torch.Tensor:
    """Fake-CAM (Opti-CAM paper): all ones but the top-left pixel, which is 0."""
    b, _, h, w = images.shape
    maps = torch.ones(b, h, w, device=images.device)
    maps[:, 0, 0] = 0.0
    return maps


@register("random", defaults={"seed": 0}, uses_layer=False, relu=False)
def random(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: None, seed: int
) -> torch.Tensor:
    """Uniform noise, a pure function of ``seed`` and the image's content.

    Counter-based (integer hashing, no generator state): an image gets the same map
    whatever batch, shard or device it is processed in.
    """
    b, _, h, w = images.shape
    pixels = (images.detach() * 255).round().to(torch.int64).flatten(1)
    position = torch.arange(pixels.shape[1], device=images.device)
    key = _hash32((pixels + 256 * position) & _MASK32).sum(1) & _MASK32
    key = _hash32(
        (key + _hash32(torch.tensor(int(seed) & _MASK32, device=images.device))) & _MASK32
    )
    counter = torch.arange(h * w, device=images.device) * 0x9E3779B1
    noise = _hash32((key.view(-1, 1) + counter) & _MASK32)
    return (noise.double() / 2**32).float().view(b, h, w)
