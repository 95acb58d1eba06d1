"""Batched training augmentation on the device: one call per batch, no per-image loop.

Configured per dataset (``dataset.augment``), completed by per-dataset defaults
(:func:`resolve_augment`)::

    hflip: true                 # horizontal flip, each image with probability 1/2
    crop_padding: 4             # random H × W crop of the image padded by 4 (0 = off)
    padding_mode: zeros         # ... padded with zeros (black) or by reflection
    random_resized_crop:        # or null: torchvision's RandomResizedCrop, output H × W
      scale: [0.08, 1.0]        #   area of the crop / area of the image
      ratio: [0.75, 1.3333]     #   aspect ratio (width / height) of the crop

Defaults: ``shapes`` hflip; ``cifar10``/``cifar100`` hflip and ``crop_padding: 4``
(zeros); ``imagefolder`` hflip and a random resized crop with the scale and ratio above.
The transforms run in a fixed order: random resized crop, padded crop, flip.

Randomness: every random number is drawn from the given ``generator`` (on its device,
normally the CPU) in a fixed order, then moved to the images' device, so a seeded CPU
generator gives the same crops and flips on any device, and bit-identical outputs on
the CPU. :func:`sample_augment` draws the parameters of a batch and
:func:`apply_augment` applies them; :func:`augment_batch` does both.

The random resized crop follows torchvision's ``RandomResizedCrop.get_params`` (ten
tries per image, then a centre crop with the ratio clamped), and resamples the crop to
the full image size with bilinear interpolation through per-image sampling grids
(``F.grid_sample``), like cropping then resizing: the output only holds the crop's content. The crop is
taken from the stored image — for ``imagefolder`` the stored centre crop, not the whole
original photo.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

PADDING_MODES = ("zeros", "reflect")
RRC_DEFAULT = {"scale": [0.08, 1.0], "ratio": [3 / 4, 4 / 3]}
RRC_TRIES = 10
BASE = {"hflip": False, "crop_padding": 0, "padding_mode": "zeros", "random_resized_crop": None}
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "shapes": {"hflip": True},
    "cifar10": {"hflip": True, "crop_padding": 4},
    "cifar100": {"hflip": True, "crop_padding": 4},
    "imagefolder": {"hflip": True, "random_resized_crop": RRC_DEFAULT},
}


def _pair(value: Any, key: str) -> list[float]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"augment key {key!r} must be a pair of numbers, got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if not (0 < lo <= hi < math.inf):
        raise ValueError(f"augment key {key!r} must satisfy 0 < low <= high, got {value!r}")
    return [lo, hi]


def check_augment(config: dict[str, Any] | None) -> dict[str, Any]:
    """``config`` completed with the neutral values of :data:`BASE` and checked;
    ``ValueError`` names a bad key."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(BASE))
    if unknown:
        raise ValueError(f"unknown augment key(s) {unknown}; valid: {', '.join(BASE)}")
    out = {**BASE, **config}
    if not isinstance(out["hflip"], bool):
        raise ValueError(f"augment key 'hflip' must be a boolean, got {out['hflip']!r}")
    pad = out["crop_padding"]
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(f"augment key 'crop_padding' must be an integer >= 0, got {pad!r}")
    if out["padding_mode"] not in PADDING_MODES:
        raise ValueError(
            f"augment key 'padding_mode' must be one of {PADDING_MODES}, got {out['padding_mode']!r}"
        )
    rrc = out["random_resized_crop"]
    if rrc is not None:
        if not isinstance(rrc, dict) or set(rrc) - set(RRC_DEFAULT):
            raise ValueError(
                f"augment key 'random_resized_crop' must be null or a mapping with keys "
                f"scale, ratio; got {rrc!r}"
            )
        rrc = {**RRC_DEFAULT, **rrc}
        scale = _pair(rrc["scale"], "random_resized_crop.scale")
        if scale[1] > 1:
            raise ValueError(f"augment key 'random_resized_crop.scale' must be <= 1, got {scale}")
        out["random_resized_crop"] = {
            "scale": scale,
            "ratio": _pair(rrc["ratio"], "random_resized_crop.ratio"),
        }
    return out


def resolve_augment(dataset_config: dict[str, Any]) -> dict[str, Any]:
    """The full augmentation of a dataset config: its ``augment`` mapping over the
    dataset's defaults (:data:`DATASET_DEFAULTS`)."""
    name = dataset_config.get("name", "shapes")
    given = dataset_config.get("augment") or {}
    return check_augment({**DATASET_DEFAULTS.get(name, {}), **given})


# --------------------------------------------------------------------------- sampling


def _rand(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=generator, device=generator.device, dtype=torch.float64)


def _resized_crop_boxes(
    batch: int, h: int, w: int, scale: list[float], ratio: list[float], generator
) -> torch.Tensor:
    """int64 (B, 4) crop boxes ``(top, left, height, width)``, torchvision's rule."""
    u_area, u_ratio = _rand(generator, batch, RRC_TRIES), _rand(generator, batch, RRC_TRIES)
    u_top, u_left = _rand(generator, batch), _rand(generator, batch)
    u_area, u_ratio, u_top, u_left = (t.cpu() for t in (u_area, u_ratio, u_top, u_left))
    area = h * w * (scale[0] + (scale[1] - scale[0]) * u_area)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u_ratio)
    cw = torch.sqrt(area * aspect).round().long()
    ch = torch.sqrt(area / aspect).round().long()
    valid = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = valid.long().argmax(dim=1, keepdim=True)  # the first valid try
    any_valid = valid.any(dim=1)
    cw, ch = cw.gather(1, first)[:, 0], ch.gather(1, first)[:, 0]
    top = (u_top * (h - ch + 1)).floor().long()
    left = (u_left * (w - cw + 1)).floor().long()
    # no valid try: the whole image, its aspect ratio clamped into `ratio`, centred
    in_ratio = w / h
    if in_ratio < min(ratio):
        fw, fh = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(h * max(ratio))), h
    else:
        fw, fh = w, h
    fallback = torch.tensor([(h - fh) // 2, (w - fw) // 2, fh, fw])
    boxes = torch.stack([top, left, ch, cw], dim=1)
    return torch.where(any_valid[:, None], boxes, fallback)


def sample_augment(
    batch: int, height: int, width: int, config: dict[str, Any], generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """The random parameters of one batch (CPU tensors), drawn in a fixed order:
    ``boxes`` (B, 4) of the random resized crop, ``offsets`` (B, 2) of the padded crop
    (row, column in the padded image, in ``[0, 2 * padding]``), ``flip`` bool (B,);
    only those the config enables."""
    config = check_augment(config)
    params: dict[str, torch.Tensor] = {}
    rrc = config["random_resized_crop"]
    if rrc is not None:
        params["boxes"] = _resized_crop_boxes(
            batch, height, width, rrc["scale"], rrc["ratio"], generator
        )
    pad = config["crop_padding"]
    if pad > 0:
        u = _rand(generator, batch, 2).cpu()
        params["offsets"] = (u * (2 * pad + 1)).floor().long().clamp_(max=2 * pad)
    if config["hflip"]:
        params["flip"] = (_rand(generator, batch) < 0.5).cpu()
    return params


# --------------------------------------------------------------------------- applying


def resized_crop(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Each image's box ``(top, left, height, width)`` resampled to the full size, as
    cropping then ``F.interpolate(mode="bilinear", align_corners=False)`` would (sample
    points clamped to the box's outer pixel centres), through one batched
    ``grid_sample`` with a per-image grid."""
    b, _, h, w = images.shape
    boxes = boxes.to(device=images.device, dtype=images.dtype)
    top, left, ch, cw = (t[:, None] for t in boxes.unbind(1))

    def axis(start: torch.Tensor, length: torch.Tensor, n: int) -> torch.Tensor:
        # output pixel centre -> continuous input coordinate inside the box -> [-1, 1]
        centres = torch.arange(n, dtype=images.dtype, device=images.device) + 0.5
        x = start + centres * (length / n)
        x = torch.minimum(torch.maximum(x, start + 0.5), start + length - 0.5)
        return 2 * x / n - 1

    xs, ys = axis(left, cw, w), axis(top, ch, h)
    grid = torch.stack((xs[:, None, :].expand(b, h, w), ys[:, :, None].expand(b, h, w)), dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _source_index(offsets: torch.Tensor, pad: int, n: int, mode: str):
    """Index into the unpadded axis of length ``n`` for each image's window, and
    whether it falls inside the image (always, for reflection)."""
    idx = offsets[:, None] - pad + torch.arange(n, device=offsets.device)
    if mode == "reflect":
        idx = idx.abs()
        idx = torch.where(idx > n - 1, 2 * (n - 1) - idx, idx)
        return idx, None
    valid = (idx >= 0) & (idx < n)
    return idx.clamp(0, n - 1), valid


def padded_crop(images: torch.Tensor, offsets: torch.Tensor, pad: int, mode: str) -> torch.Tensor:
    """For each image, the H × W window at ``offsets`` (row, column) of the image padded by
    ``pad`` on every side (zeros, or reflection without repeating the edge, as
    ``F.pad(mode="reflect")``) — by index arithmetic and two gathers, no padded copy."""
    b, c, h, w = images.shape
    if mode == "reflect" and pad >= min(h, w):
        raise ValueError(f"reflect padding {pad} needs images larger than it, got {h}x{w}")
    offsets = offsets.to(images.device)
    rows, row_ok = _source_index(offsets[:, 0], pad, h, mode)
    cols, col_ok = _source_index(offsets[:, 1], pad, w, mode)
    out = images.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, w))
    out = out.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))
    if mode == "zeros":
        inside = (row_ok[:, :, None] & col_ok[:, None, :]).unsqueeze(1)
        out = torch.where(inside, out, torch.zeros((), dtype=out.dtype, device=out.device))
    return out


def apply_augment(
    images: torch.Tensor, params: dict[str, torch.Tensor], config: dict[str, Any]
) -> torch.Tensor:
    """Apply the parameters of :func:`sample_augment` to ``images`` (B, 3, H, W)."""
    config = check_augment(config)
    if "boxes" in params:
        images = resized_crop(images, params["boxes"])
    if "offsets" in params:
        images = padded_crop(
            images, params["offsets"], config["crop_padding"], config["padding_mode"]
        )
    if "flip" in params:
        flip = params["flip"].to(images.device).view(-1, 1, 1, 1)
        images = torch.where(flip, images.flip(3), images)
    return images


def augment_batch(
    images: torch.Tensor, config: dict[str, Any] | None, generator: torch.Generator
) -> torch.Tensor:
    """Randomly augmented ``images`` (float (B, 3, H, W), any device; same shape).

    ``config``: the ``dataset.augment`` mapping (missing keys: off; use
    :func:`resolve_augment` for the dataset's defaults). ``generator``: the source of
    every random number (a seeded CPU generator makes runs reproducible).
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    b, _, h, w = images.shape
    params = sample_augment(b, h, w, config or {}, generator)
    return apply_augment(images, params, config or {})
