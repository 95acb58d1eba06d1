"""Localization metrics: pointing game (with an optional tolerance), energy-based
pointing game, and the IoU of the map thresholded at its mean.

``maps`` are float (B, H, W) saliency maps in [0, 1] (any non-negative values
work); ``masks`` are the ground-truth object masks, bool or 0/1 of the same
shape. Everything is scored per image, batched, on the maps' device.

Units: scores are fractions in [0, 1] (a hit is 1.0); tables report percent, the
caller multiplies by 100.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Localization", "localization"]


@dataclass
class Localization:
    """Per-image localization scores, float32 (B,) each; NaN for an image whose mask
    is empty (no object to localize: the metric does not apply).

    ``pointing``: 1.0 when the map's maximum falls inside the mask (or within the
    tolerance of it), 0.0 otherwise. ``energy``: share of the map's mass inside the
    mask, in [0, 1]. ``iou``: intersection over union of ``{map > mean(map)}`` and the
    mask, in [0, 1].
    """

    pointing: torch.Tensor
    energy: torch.Tensor
    iou: torch.Tensor


@torch.no_grad()
def localization(maps: torch.Tensor, masks: torch.Tensor, tolerance: float = 0) -> Localization:
    r"""Pointing game, energy-based pointing game and mean-threshold IoU of each map
    against its object mask.

    The pointing game is described in `"Top-down Neural Attention by Excitation
    Backprop" <https://arxiv.org/abs/1608.00507>`_ (Zhang et al., ECCV 2016), the
    energy-based pointing game in `"Score-CAM: Score-Weighted Visual Explanations for
    Convolutional Neural Networks" <https://arxiv.org/abs/1910.01279>`_ (Wang et al.,
    CVPR Workshops 2020). For a map :math:`S` and a mask :math:`M` (the set of object
    pixels):

    .. math::
        \mathrm{PG} = \mathbb{1}\big[\min_{q \in M} \lVert \hat p - q \rVert_2 \le
        \tau\big], \qquad
        \mathrm{EPG} = \frac{\sum_{q \in M} S_q}{\sum_q S_q}, \qquad
        \mathrm{IoU} = \frac{|R \cap M|}{|R \cup M|}

    where :math:`\hat p = \arg\max_q S_q` is the map's peak pixel, :math:`\tau` the
    ``tolerance`` in pixels and :math:`R = \{q : S_q > \bar S\}` the pixels above the
    map's mean :math:`\bar S`. All three are better high (↑); the means over the
    images are the scores of the tables (in percent there).

    Pointing game: the hit pixel is the map's argmax, the first maximal pixel in
    row-major (flattened) order when several pixels share the maximum. It is a hit
    when its Euclidean distance to the nearest mask pixel is at most ``tolerance``
    pixels (0: the pixel itself must be in the mask; Zhang et al. used 15 pixels on
    224-pixel images), i.e. when it lies in the mask dilated by a disk of radius
    ``tolerance``. An all-zero (constant) map points at pixel (0, 0).

    Energy: ``sum(map * mask) / sum(map)``, defined as 0 where ``sum(map) == 0``
    (an all-zero map).

    IoU: the map is thresholded at its own mean (pixels strictly above the mean form
    the predicted region, so a constant map predicts nothing and scores 0), and the
    region is compared with the mask: ``|region ∩ mask| / |region ∪ mask|``.

    An image whose mask is empty gets NaN in all three (summaries skip NaN). Returns
    float32 (B,) tensors on the maps' device (the masks are moved there). Raises
    ``ValueError`` when ``maps`` is not (B, H, W), ``masks`` has another shape,
    ``masks`` holds values other than 0 and 1, or ``tolerance`` is negative.

    Example::
        >>> import torch
        >>> from cambench.metrics import localization
        >>> maps = torch.tensor([[[0.0, 0.2], [0.6, 0.2]]])  # peak at (1, 0), sum 1
        >>> masks = torch.tensor([[[False, True], [True, False]]])
        >>> scores = localization(maps, masks)
        >>> scores.pointing, scores.energy, scores.iou  # hit; 0.8 inside; {(1, 0)} vs mask
        (tensor([1.]), tensor([0.8000]), tensor([0.5000]))
    """
    if not isinstance(maps, torch.Tensor) or maps.ndim != 3:
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps)
        raise ValueError(f"maps must be a (B, H, W) tensor, got shape {shape}")
    if maps.dtype == torch.bool or maps.is_complex():
        raise ValueError(f"maps must be a real-valued tensor, got dtype {maps.dtype}")
    if not isinstance(masks, torch.Tensor) or masks.shape != maps.shape:
        shape = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks)
        raise ValueError(
            f"masks must have the maps' shape (B, H, W) = {tuple(maps.shape)}, got {shape}"
        )
    if isinstance(tolerance, bool) or not float(tolerance) >= 0:
        raise ValueError(f"tolerance must be a non-negative number of pixels, got {tolerance!r}")
    masks = masks.to(maps.device)
    if masks.dtype != torch.bool:
        if not bool(((masks == 0) | (masks == 1)).all()):
            raise ValueError("masks must be boolean or hold only the values 0 and 1")
        masks = masks != 0

    _, h, w = maps.shape
    flat = maps.flatten(1).float()
    inside = masks.flatten(1)
    has_object = inside.any(dim=1)
    peak = flat.argmax(dim=1, keepdim=True)  # first maximal index on ties
    if tolerance > 0:
        ys = torch.arange(h, device=maps.device).repeat_interleave(w)
        xs = torch.arange(w, device=maps.device).repeat(h)
        dist2 = (ys[None] - ys[peak]) ** 2 + (xs[None] - xs[peak]) ** 2  # (B, H*W)
        nearest = torch.where(inside, dist2, torch.full_like(dist2, h * h + w * w + 1))
        pointing = (nearest.min(dim=1).values <= float(tolerance) ** 2).float()
    else:
        pointing = inside.gather(1, peak).squeeze(1).float()

    mass = flat.sum(dim=1)
    mass_inside = (flat * inside).sum(dim=1)
    safe = torch.where(mass != 0, mass, torch.ones_like(mass))
    energy = torch.where(mass != 0, mass_inside / safe, torch.zeros_like(mass))

    region = flat > flat.mean(dim=1, keepdim=True)
    intersection = (region & inside).sum(dim=1).float()
    union = (region | inside).sum(dim=1).float()
    iou = intersection / union.clamp_min(1)

    nan = torch.full_like(mass, float("nan"))
    return Localization(
        pointing=torch.where(has_object, pointing, nan),
        energy=torch.where(has_object, energy, nan),
        iou=torch.where(has_object, iou, nan),
    )
