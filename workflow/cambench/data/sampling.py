"""Order and subsample imported datasets, and resize their images, the same way for all.

:func:`balanced_order` fixes the order in which an imported split is stored: a seeded
shuffle arranged round-robin over the classes, so every prefix of the stored split is
class-balanced (class counts differ by at most one while every class still has
images). ``max_train``/``max_test`` keep such a prefix: a seeded, balanced subsample.
Evaluation takes the first ``eval.n_images`` images of the test split, so these are
balanced too, also for datasets stored class by class on disk (ImageFolder).

:func:`resize_center_crop` is the one deterministic image transform of imported
datasets (torchvision's eval transform ``Resize(resize)`` + ``CenterCrop(size)``, with
bilinear antialiased resampling); :func:`crop_geometry` gives its exact geometry, which
the ground-truth masks of :mod:`.imagefolder` follow.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


def balanced_order(labels: torch.Tensor, seed: int, limit: int | None = None) -> torch.Tensor:
    """Indices into ``labels``: a seeded shuffle, round-robin over classes.

    Round ``k`` holds the ``k``-th image (in shuffled order) of every class that has
    one, its classes in random order. The first ``limit`` indices (all when ``None``)
    are returned: a class-balanced random subset whose every prefix is balanced too.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64).cpu()
    n = int(labels.numel())
    if limit is not None and (isinstance(limit, bool) or int(limit) != limit or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    generator = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=generator)
    shuffled = labels[perm]
    # rank of each image within its class, in shuffled order
    by_class = torch.sort(shuffled, stable=True).indices
    counts = torch.bincount(shuffled, minlength=1)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(n, dtype=torch.int64)
    rank[by_class] = torch.arange(n) - starts[shuffled[by_class]]
    # round first, then the (random) shuffled position: ties are impossible
    order = perm[torch.argsort(rank * n + torch.arange(n))]
    return order if limit is None else order[: int(limit)]


class CropGeometry(NamedTuple):
    """Resize an ``(h, w)`` image to ``(resized_h, resized_w)``, then keep the ``size`` ×
    ``size`` window whose top-left corner is ``(top, left)`` in resized pixels."""

    resized_h: int
    resized_w: int
    top: int
    left: int
    size: int


def crop_geometry(h: int, w: int, resize: int, size: int) -> CropGeometry:
    """torchvision's rule: the short side becomes ``resize``, the long one
    ``int(resize * long / short)``; the centre crop starts at ``int(round((R - size) / 2))``."""
    if resize < size:
        raise ValueError(f"resize ({resize}) must be at least image_size ({size})")
    if h <= w:
        resized_h, resized_w = resize, int(resize * w / h)
    else:
        resized_h, resized_w = int(resize * h / w), resize
    top = int(round((resized_h - size) / 2.0))
    left = int(round((resized_w - size) / 2.0))
    return CropGeometry(resized_h, resized_w, top, left, size)


def resize_center_crop(images: torch.Tensor, resize: int, size: int) -> torch.Tensor:
    """uint8 (B, 3, h, w) → uint8 (B, 3, size, size): bilinear antialiased resize of the
    short side to ``resize``, then the centre ``size`` × ``size`` crop. Identity when the
    images already have that size."""
    h, w = images.shape[-2:]
    g = crop_geometry(h, w, resize, size)
    if (g.resized_h, g.resized_w) != (h, w):
        x = F.interpolate(
            images.float(),
            size=(g.resized_h, g.resized_w),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        images = x.round_().clamp_(0, 255).to(torch.uint8)
    return images[..., g.top : g.top + size, g.left : g.left + size].contiguous()
