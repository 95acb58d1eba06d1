"""CIFAR-10 and CIFAR-100, read through torchvision from a local copy.

``dataset.root`` holds the extracted official archive in torchvision's on-disk format:
``<root>/cifar-10-batches-py/`` (``data_batch_1`` … ``data_batch_5``, ``test_batch``,
``batches.meta``) or ``<root>/cifar-100-python/`` (``train``, ``test``, ``meta``).
torchvision checks every file's MD5 against the official archive. Nothing is downloaded
unless ``dataset.download`` is true (then torchvision fetches and extracts the archive
into ``root``, which needs internet access).

The images stay 32 × 32 unless ``image_size`` (and optionally ``resize``, the short
side before the centre crop; default ``image_size``) asks otherwise. Neither split has
localization ground truth: ``masks`` are all False and ``has_masks`` is false.
``max_train``/``max_test`` keep a seeded, class-balanced subset; the stored order is
round-robin over classes (see :func:`cambench.data.sampling.balanced_order`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from cambench.data.sampling import balanced_order, resize_center_crop
from cambench.data.store import Split, write_split

CIFAR_SIZE = 32
ARCHIVES = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}


def _dataset_class(name: str):
    from torchvision.datasets import CIFAR10, CIFAR100

    return {"cifar10": CIFAR10, "cifar100": CIFAR100}[name]


def cifar_folder(name: str, root: str | os.PathLike) -> Path:
    """Where torchvision expects the extracted archive of ``name`` under ``root``."""
    return Path(root) / _dataset_class(name).base_folder


def load_cifar(
    name: str, root: str | os.PathLike, train: bool, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """One split of CIFAR-10/100: uint8 images (N, 3, 32, 32), int64 labels, class names.

    Raises ``FileNotFoundError`` naming the folder and the missing files (and how to
    provide them) when the data is not there and ``download`` is false, and
    ``RuntimeError`` naming the folder when torchvision finds the files corrupted.
    """
    if name not in ARCHIVES:
        raise ValueError(f"unknown CIFAR dataset {name!r}; valid: {', '.join(ARCHIVES)}")
    cls = _dataset_class(name)
    folder = cifar_folder(name, root).resolve()
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing and not download:
        raise FileNotFoundError(
            f"{name}: dataset not found at {folder} (missing {', '.join(missing)}). "
            f"Either set `dataset.download: true` on a machine with internet access, or "
            f"download {ARCHIVES[name]} and extract it into {folder.parent} "
            f"(dataset.root), which creates {folder.name}/."
        )
    try:
        data = cls(root=str(folder.parent), train=train, download=download)
    except RuntimeError as err:
        raise RuntimeError(
            f"{name}: the files in {folder} failed torchvision's MD5 check ({err}); "
            f"they are corrupted or not the official archive {ARCHIVES[name]}: "
            f"delete {folder} and extract the archive again"
        ) from err
    images = torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous()
    labels = torch.as_tensor(data.targets, dtype=torch.int64)
    return images, labels, list(data.classes)


def prepare_cifar(
    dataset_config: dict[str, Any], out_paths: dict[str, str | os.PathLike]
) -> dict[str, Path]:
    """Write the ``train`` and ``test`` splits of CIFAR-10/100 (see the module docstring)."""
    name = dataset_config["name"]
    if dataset_config.get("boxes"):
        raise ValueError(f"dataset.boxes is only for imagefolder datasets, not {name}")
    root = dataset_config.get("root")
    if not root:
        raise ValueError(f"dataset.root is required for {name}: the folder that holds it")
    size = int(dataset_config.get("image_size") or CIFAR_SIZE)
    resize = int(dataset_config.get("resize") or size)
    seed = int(dataset_config.get("seed", 0))
    download = bool(dataset_config.get("download", False))
    out = {}
    for split_name, train, limit, split_seed in (
        ("train", True, dataset_config.get("max_train"), 2 * seed),
        ("test", False, dataset_config.get("max_test"), 2 * seed + 1),
    ):
        images, labels, class_names = load_cifar(name, root, train=train, download=download)
        total = len(labels)
        order = balanced_order(labels, split_seed, limit)
        images, labels = images[order], labels[order]
        images = torch.cat(
            [resize_center_crop(chunk, resize, size) for chunk in images.split(1024)]
        )
        masks = torch.zeros(len(labels), size, size, dtype=torch.bool)
        attrs = {
            "dataset": name,
            "split": split_name,
            "has_masks": False,
            "n_with_mask": 0,
            "seed": seed,
            "image_size": size,
            "resize": resize,
            "source_size": total,
            "root": str(root),
        }
        path = Path(out_paths[split_name])
        write_split(path, Split(images, labels, masks, class_names, attrs))
        print(f"{name} {split_name}: {len(labels)} of {total} images, {size}x{size} -> {path}")
        out[split_name] = path
    return out
