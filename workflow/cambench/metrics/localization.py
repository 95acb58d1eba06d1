"""Localization metrics: pointing game and energy-based pointing game.

``maps`` are float (B, H, W) saliency maps in [0, 1] (any non-negative values
work); ``masks`` are the ground-truth object masks, bool or 0/1 of the same
shape. Both are scored per image, batched, on the maps' device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Localization", "localization"]


@dataclass
class Localization:
    """Per-image localization scores.

    ``pointing``: (B,) float, 1.0 when the map's maximum falls inside the mask
    (a hit), 0.0 otherwise (a miss). ``energy``: (B,) share of the map's mass
    inside the mask, in [0, 1].
    """

    pointing: torch.Tensor
    energy: torch.Tensor


@torch.no_grad()
def localization(maps: torch.Tensor, masks: torch.Tensor) -> Localization:
    """Pointing game (Zhang et al., 2016) and energy-based pointing game (Wang et al., 2020).

    Pointing game: the hit pixel is the map's argmax, the first maximal pixel in
    row-major (flattened) order when several pixels share the maximum; there is
    no tolerance margin around the mask. An all-zero (constant) map therefore
    points at pixel (0, 0), the top-left corner: a hit exactly when that pixel is
    in the mask.

    Energy: ``sum(map * mask) / sum(map)``, defined as 0 where ``sum(map) == 0``
    (an all-zero map). Maps are expected non-negative (cambench maps are in
    [0, 1]), so the energy lies in [0, 1].

    Both are float32 (B,) tensors on the maps' device (the masks are moved there).
    Raises ``ValueError`` when ``maps`` is not (B, H, W), ``masks`` has another
    shape, or ``masks`` holds values other than 0 and 1.
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
    masks = masks.to(maps.device)
    if masks.dtype != torch.bool:
        if not bool(((masks == 0) | (masks == 1)).all()):
            raise ValueError("masks must be boolean or hold only the values 0 and 1")
        masks = masks != 0

    flat = maps.flatten(1).float()
    inside = masks.flatten(1)
    peak = flat.argmax(dim=1, keepdim=True)  # first maximal index on ties
    pointing = inside.gather(1, peak).squeeze(1).float()

    mass = flat.sum(dim=1)
    mass_inside = (flat * inside).sum(dim=1)
    safe = torch.where(mass != 0, mass, torch.ones_like(mass))
    energy = torch.where(mass != 0, mass_inside / safe, torch.zeros_like(mass))
    return Localization(pointing=pointing, energy=energy)
