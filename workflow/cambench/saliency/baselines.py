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
    """Fake-CAM (Opti-CAM paper): all ones but the top-left pixel, which is 0.

    ``S_ij = 1`` for every pixel but ``S_00 = 0``, at the input's resolution, so the
    map ``n(S) = S`` keeps the whole image: a sanity check that Average Drop and
    similar metrics reward a map that explains nothing.

    Zhang et al., "Opti-CAM: Optimizing saliency maps for interpretability", CVIU
    2024, https://arxiv.org/abs/2301.07002.

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> maps = explain("fakecam", *example_inputs())
    >>> maps.sum((1, 2)).tolist(), maps[:, 0, 0].tolist()
    ([1023.0, 1023.0], [0.0, 0.0])
    """
    b, _, h, w = images.shape
    maps = torch.ones(b, h, w, device=images.device)
    maps[:, 0, 0] = 0.0
    return maps


@register("random", defaults={"seed": 0}, uses_layer=False, relu=False)
def random(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: None, seed: int
) -> torch.Tensor:
    """Uniform noise, a pure function of ``seed`` and the image's content.

    ``S_ij = h(seed, x, i, j) / 2³²`` with ``h`` a 32-bit integer hash of the seed,
    the image's pixels (as 0–255 integers) and the position: uniform in [0, 1) at the
    input's resolution; the map is ``n(S)``. Counter-based (no generator state): an
    image gets the same map whatever batch, shard or device it is processed in. A
    baseline that looks at neither the model nor the class (no paper).

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> model, images, targets = example_inputs(batch=3)
    >>> maps = explain("random", model, images, targets, seed=1)
    >>> alone = explain("random", model, images[2:], targets[2:], seed=1)  # image 2 alone
    >>> maps[2].equal(alone[0]), maps[2].equal(maps[1])
    (True, False)
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
