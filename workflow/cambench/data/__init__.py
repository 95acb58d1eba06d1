"""Datasets: generation or import, then one HDF5 file per split (see :mod:`.store`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cambench.data.store import Split, read_split, write_split

DATASETS = ("shapes",)

__all__ = ["DATASETS", "Split", "prepare_dataset", "read_split", "write_split"]


def prepare_dataset(
    dataset_config: dict[str, Any], out_paths: dict[str, str | os.PathLike]
) -> dict[str, Path]:
    """Write the ``train`` and ``test`` splits of the configured dataset to ``out_paths``."""
    name = dataset_config.get("name", "shapes")
    if name != "shapes":
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    from cambench.data.shapes import CLASS_NAMES, generate_shapes

    size = int(dataset_config.get("image_size", 32))
    num_classes = int(dataset_config.get("num_classes", 10))
    seed = int(dataset_config.get("seed", 0))
    out = {}
    # Distinct, fixed seed offsets keep the two splits independent but reproducible.
    for split_name, n, split_seed in (
        ("train", int(dataset_config.get("train_size", 8000)), 2 * seed),
        ("test", int(dataset_config.get("test_size", 1000)), 2 * seed + 1),
    ):
        images, labels, masks = generate_shapes(
            n, image_size=size, num_classes=num_classes, seed=split_seed
        )
        attrs = {"dataset": "shapes", "split": split_name, "seed": seed, "image_size": size}
        split = Split(images, labels, masks, list(CLASS_NAMES[:num_classes]), attrs)
        path = Path(out_paths[split_name])
        write_split(path, split)
        out[split_name] = path
    return out
