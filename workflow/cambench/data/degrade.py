r"""Images degraded by a saliency map, on the fly: what ROAR and KAR retrain on.

Hooker et al., "A Benchmark for Interpretability Methods in Deep Neural Networks",
NeurIPS 2019, https://arxiv.org/abs/1806.10758. For an image with :math:`P` pixels and
its map :math:`s`, the pixels are ordered from the most to the least salient (ties
broken by a seeded hash of the image's position in its split and the pixel, so the
order does not depend on how images are batched), and at fraction :math:`f` the
:math:`k = \operatorname{round}(f P)` top pixels are

- **replaced** (ROAR, ``keep=False``): a faithful map removes the evidence, and a
  model retrained on such images loses accuracy fastest;
- **kept**, every other pixel replaced (KAR, ``keep=True``): a faithful map keeps
  the evidence, and accuracy stays high with few pixels kept. (Hooker et al. plot
  KAR against the fraction replaced, :math:`1 - f` here.)

Replaced pixels take the per-channel mean of the training split (``mean``: the same
uninformative value everywhere, as in the paper), or whatever the ``impute`` hook of
:class:`DegradedImages` computes (the ROAR job passes Rong et al.'s noisy linear
imputation, :mod:`cambench.metrics.road`). Nothing is stored: the degraded
images are computed batch by batch from the stored images and the cached maps, so a
retrain costs no disk beyond the maps themselves.

>>> import torch
>>> maps = torch.tensor([[[0.9, 0.1], [0.5, 0.5]]])  # one 2×2 map
>>> order = salience_order(maps, torch.tensor([0]), seed=0)
>>> order[0, 0].item(), order[0, -1].item()  # the most and the least salient pixel
(0, 1)
>>> replaced_pixels(maps, torch.tensor([0]), fraction=0.25, keep=False, seed=0)
tensor([[[ True, False],
         [False, False]]])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

MASK32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixing hash (lowbias32) of int64 ``x``'s low 32 bits,
    computed in int64 (products wrap modulo 2⁶⁴; the mask keeps the low 32 bits)."""
    x = x & MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & MASK32
    return x ^ (x >> 16)


def tie_keys(index: torch.Tensor, n_pixels: int, seed: int) -> torch.Tensor:
    """(B, P) int64 keys: a seeded hash of (seed, image position ``index``, pixel)."""
    image = _hash32(index.to(torch.int64) * 0x9E3779B1 + int(seed) * 0x85EBCA77)
    pixel = torch.arange(n_pixels, dtype=torch.int64, device=index.device)
    return _hash32(image[:, None] ^ (pixel[None, :] * 0xC2B2AE3D))


def salience_order(maps: torch.Tensor, index: torch.Tensor, seed: int) -> torch.Tensor:
    """(B, P) flat pixel positions of each map, from the most to the least salient;
    equal values in the order of :func:`tie_keys`."""
    if maps.ndim != 3 or index.shape != (maps.shape[0],):
        raise ValueError(
            f"maps must be (B, H, W) and index (B,), got {tuple(maps.shape)} and "
            f"{tuple(index.shape)}"
        )
    flat = maps.flatten(1).float()
    by_key = torch.argsort(tie_keys(index.to(maps.device), flat.shape[1], seed), dim=1)
    values = flat.gather(1, by_key)
    by_value = torch.sort(values, dim=1, descending=True, stable=True).indices
    return by_key.gather(1, by_value)


def replaced_pixels(
    maps: torch.Tensor, index: torch.Tensor, fraction: float, keep: bool, seed: int
) -> torch.Tensor:
    """(B, H, W) bool: the pixels replaced at ``fraction`` — the top
    ``round(fraction · P)`` (ROAR) or all but them (KAR, ``keep=True``)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    order = salience_order(maps, index, seed)
    n_pixels = order.shape[1]
    k = int(math.floor(fraction * n_pixels + 0.5))
    top = torch.zeros_like(order, dtype=torch.bool)
    top.scatter_(1, order[:, :k], True)
    replaced = ~top if keep else top
    return replaced.view(maps.shape)


def impute_mean(images: torch.Tensor, replaced: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``images`` (B, 3, H, W, any dtype) with the ``replaced`` (B, H, W) pixels set to
    the per-channel ``mean`` (3,), in the images' dtype."""
    fill = mean.to(images.dtype).to(images.device).view(1, -1, 1, 1)
    return torch.where(replaced[:, None], fill, images)


def channel_mean(images: Any, batch_size: int = 1024) -> torch.Tensor:
    """Per-channel mean (3,) float64 of uint8 ``images`` (a tensor or lazily read rows
    of (N, 3, H, W)), in the images' 0–255 units, read ``batch_size`` at a time."""
    total = torch.zeros(3, dtype=torch.float64)
    n = len(images)
    if n == 0:
        raise ValueError("channel_mean of an empty split")
    for start in range(0, n, batch_size):
        block = images[start : start + batch_size]
        total += block.to(torch.float64).sum((0, 2, 3))
    pixels = n * images.shape[2] * images.shape[3]
    return total / pixels


class DegradedImages:
    """The rows of ``images`` (uint8 (N, 3, H, W)), degraded by the rows of ``maps``
    ((N, H, W), aligned with the images by position) when read: a drop-in for a
    :class:`cambench.data.store.Split`'s ``images``. ``mean``: the replacement value
    (3,), in uint8 units (rounded). ``impute(images, replaced, positions)``, when
    given, computes the degraded uint8 batch instead of the mean (``positions``: the
    rows' positions in the split, for seeded noise). ``device``: where the ranking and
    imputation run (a GPU: the sort of every image's pixels is the cost, about 65 ms
    per 224 px image on one CPU thread); the rows are returned where they were read."""

    def __init__(
        self,
        images: Any,
        maps: Any,
        fraction: float,
        keep: bool,
        mean: torch.Tensor,
        seed: int,
        impute: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if len(maps) != len(images) or tuple(maps.shape[1:]) != tuple(images.shape[2:]):
            raise ValueError(
                f"maps {tuple(maps.shape)} do not cover the images {tuple(images.shape)}"
            )
        self.images = images
        self.maps = maps
        self.fraction = fraction
        self.keep = keep
        self.mean = torch.round(mean.to(torch.float64)).clamp(0, 255).to(torch.uint8)
        self.seed = seed
        self.impute = impute
        self.device = torch.device(device) if device is not None else None
        self.shape = tuple(images.shape)
        self.ndim = len(self.shape)
        self.dtype = torch.uint8

    def __len__(self) -> int:
        return self.shape[0]

    def _positions(self, key: Any) -> torch.Tensor:
        n = len(self)
        if isinstance(key, slice):
            return torch.arange(n)[key]
        if isinstance(key, int):
            key = [key]
        positions = torch.as_tensor(key, dtype=torch.int64).reshape(-1)
        return torch.where(positions < 0, positions + n, positions)

    def __getitem__(self, key: Any) -> torch.Tensor:
        scalar = isinstance(key, int)
        positions = self._positions(key)
        images = self.images[key] if not scalar else self.images[key][None]
        maps = self.maps[key] if not scalar else self.maps[key][None]
        if self.device is not None:  # rank and impute there; the rows come back as read
            home = images.device
            images, maps = images.to(self.device), maps.to(self.device)
            positions = positions.to(self.device)
        replaced = replaced_pixels(maps, positions, self.fraction, self.keep, self.seed)
        if self.impute is None:
            out = impute_mean(images, replaced, self.mean)
        else:
            out = self.impute(images, replaced, positions)
        if self.device is not None:
            out = out.to(home)
        return out[0] if scalar else out
