"""Datasets: generation or import, then one HDF5 file per split (see :mod:`.store`).

``dataset.name`` picks the source:

- ``shapes``: the embedded synthetic dataset (:mod:`.shapes`), with object masks;
- ``cifar10`` / ``cifar100``: a local copy read through torchvision (:mod:`.cifar`);
- ``imagefolder``: ``train/``/``val/`` class folders, optional VOC boxes as masks
  (:mod:`.imagefolder`).

Every split file records ``has_masks``: whether its ``masks`` are localization ground
truth (false: all False, localization metrics do not apply). Imported datasets are
stored in a seeded class-balanced order and may be subsampled (``max_train``,
``max_test``; :mod:`.sampling`). Training augmentation (``dataset.augment``) is not
applied here: see :mod:`.augment`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cambench.data.store import Split, read_split, write_split

DATASETS = ("shapes", "cifar10", "cifar100", "imagefolder")

# Keys of the dataset config that do not change the prepared files: the data rule
# leaves them out of its params, so changing them retrains without re-preparing.
TRAINING_ONLY_KEYS = ("augment",)

# The test splits of CIFAR-10 and CIFAR-100 (torchvision's ``train=False``).
CIFAR_TEST_IMAGES = 10_000

__all__ = [
    "DATASETS",
    "test_split_size",
    "Split",
    "preparation_config",
    "prepare_dataset",
    "read_split",
    "write_split",
]


def preparation_config(dataset_config: dict[str, Any]) -> dict[str, Any]:
    """The part of the dataset config that :func:`prepare_dataset` uses."""
    return {k: v for k, v in dataset_config.items() if k not in TRAINING_ONLY_KEYS}


def test_split_size(dataset_config: dict[str, Any]) -> int | None:
    """How many images the prepared test split will hold at most, from the config and
    (for an image folder) a count of the files, without decoding anything; ``None``
    where that cannot be known yet (a dataset still to be downloaded or found).

    The workflow checks ``eval.n_images`` against it when it reads the config, so a
    too-large value fails before any job runs (a damaged image skipped with
    ``skip_damaged`` can still make the split smaller; the saliency job checks again).
    """
    name = dataset_config.get("name", "shapes")
    limit = dataset_config.get("max_test")
    if name == "shapes":
        return int(dataset_config.get("test_size", 1000))
    if name in ("cifar10", "cifar100"):
        total = CIFAR_TEST_IMAGES
    elif name == "imagefolder" and dataset_config.get("root"):
        from cambench.data.imagefolder import count_test_images

        total = count_test_images(dataset_config["root"])
        if total is None:
            return None
    else:
        return None
    return min(total, int(limit)) if limit else total


def prepare_dataset(
    dataset_config: dict[str, Any], out_paths: dict[str, str | os.PathLike]
) -> dict[str, Path]:
    """Write the ``train`` and ``test`` splits of the configured dataset to ``out_paths``."""
    name = dataset_config.get("name", "shapes")
    if name in ("cifar10", "cifar100"):
        from cambench.data.cifar import prepare_cifar

        return prepare_cifar(dataset_config, out_paths)
    if name == "imagefolder":
        from cambench.data.imagefolder import prepare_imagefolder

        return prepare_imagefolder(dataset_config, out_paths)
    if name != "shapes":
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    from cambench.data.shapes import CLASS_NAMES, generate_shapes

    if dataset_config.get("boxes"):
        raise ValueError("dataset.boxes is only for imagefolder datasets, not shapes")
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
        attrs = {
            "dataset": "shapes",
            "split": split_name,
            "has_masks": True,
            "n_with_mask": n,
            "seed": seed,
            "image_size": size,
        }
        split = Split(images, labels, masks, list(CLASS_NAMES[:num_classes]), attrs)
        path = Path(out_paths[split_name])
        write_split(path, split)
        out[split_name] = path
    return out
