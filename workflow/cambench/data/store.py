"""The prepared-dataset file format: one HDF5 file per split.

Datasets: ``images`` uint8 (N, 3, H, W), ``labels`` int64 (N,), ``masks`` bool (N, H, W)
(ground-truth object masks; all False where a dataset has none). Attributes:
``class_names`` (JSON list), ``dataset``, ``split`` and the generator's parameters.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import h5py
import numpy as np
import torch

from cambench.atomic import atomic_output

REQUIRED = ("images", "labels", "masks")


@dataclass
class Split:
    """One split of a prepared dataset, held in memory."""

    images: torch.Tensor  # uint8 (N, 3, H, W)
    labels: torch.Tensor  # int64 (N,)
    masks: torch.Tensor  # bool (N, H, W)
    class_names: list[str]
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def float_images(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Images as float in [0, 1] (the convention every model expects)."""
        images = self.images if index is None else self.images[index]
        return images.float().div_(255.0)


def write_split(path: str | os.PathLike, split: Split) -> None:
    """Write ``split`` atomically to ``path``."""
    n = len(split)
    if split.images.dtype != torch.uint8 or split.images.ndim != 4 or split.images.shape[1] != 3:
        raise ValueError(
            f"images must be uint8 (N, 3, H, W), got {split.images.dtype} {tuple(split.images.shape)}"
        )
    if split.masks.shape != (n, *split.images.shape[2:]):
        raise ValueError(
            f"masks must be (N, H, W) = {(n, *split.images.shape[2:])}, got {tuple(split.masks.shape)}"
        )
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        h, w = split.images.shape[2:]
        f.create_dataset(
            "images",
            data=split.images.numpy(),
            chunks=(min(n, 64), 3, h, w),
            compression="gzip",
            compression_opts=1,
        )
        f.create_dataset("labels", data=split.labels.numpy().astype(np.int64))
        f.create_dataset(
            "masks",
            data=split.masks.numpy().astype(bool),
            chunks=(min(n, 64), h, w),
            compression="gzip",
            compression_opts=1,
        )
        f.attrs["class_names"] = json.dumps(list(split.class_names))
        for key, value in split.attrs.items():
            f.attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value)


def read_split(path: str | os.PathLike) -> Split:
    """Read a split written by :func:`write_split`, with errors that name the file."""
    try:
        f = h5py.File(path, "r")
    except (OSError, FileNotFoundError) as err:
        raise ValueError(f"{path}: cannot open dataset file ({err})") from err
    with f:
        missing = [k for k in REQUIRED if k not in f]
        if missing:
            raise ValueError(f"{path}: not a cambench dataset file, missing datasets {missing}")
        if "class_names" not in f.attrs:
            raise ValueError(f"{path}: missing attribute 'class_names'")
        images = torch.from_numpy(f["images"][()])
        labels = torch.from_numpy(f["labels"][()].astype(np.int64))
        masks = torch.from_numpy(f["masks"][()].astype(bool))
        class_names = json.loads(f.attrs["class_names"])
        attrs = {k: v for k, v in f.attrs.items() if k != "class_names"}
    return Split(images, labels, masks, class_names, attrs)
