"""A grid of saliency maps: images in rows, methods in columns."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from matplotlib import patheffects

from cambench.checksum import verify as verify_checksum
from cambench.plots.style import method_color, new_figure, save_figure, styled

SALIENCY_DATASETS = ("saliency", "index", "target", "label")
TEST_DATASETS = ("images", "labels", "masks")
SALIENCY_CMAP = "jet"
OVERLAY_ALPHA = 0.5
CELL = 1.05  # inches per image
OUTLINE = [patheffects.withStroke(linewidth=2.2, foreground="black")]


@dataclass
class _Shards:
    """Where each image of one method lives: index → (file, row)."""

    method: str
    location: dict[int, tuple[Path, int]]
    shape: tuple[int, int]


def _open_h5(path: Path, what: str) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except FileNotFoundError as err:
        raise ValueError(f"{path}: {what} not found") from err
    except OSError as err:
        raise ValueError(f"{path}: cannot open {what} as HDF5 ({err})") from err


def _index_shards(method: str, files: Sequence[str | os.PathLike]) -> _Shards:
    if isinstance(files, (str, os.PathLike)) or not files:
        raise ValueError(
            f"method {method!r}: expected a non-empty list of saliency files, got {files!r}"
        )
    location: dict[int, tuple[Path, int]] = {}
    shape = None
    for file in files:
        path = Path(file)
        verify_checksum(path)  # before HDF5 parses a byte of it
        with _open_h5(path, "saliency file") as f:
            missing = [k for k in SALIENCY_DATASETS if k not in f]
            if missing:
                raise ValueError(f"{path}: not a saliency cache, missing dataset(s) {missing}")
            if "complete" in f.attrs and not bool(f.attrs["complete"]):
                raise ValueError(f"{path}: saliency cache is incomplete (attribute complete=False)")
            stored = f.attrs.get("method")
            if isinstance(stored, bytes):
                stored = stored.decode()
            if stored is not None and str(stored) != method:
                raise ValueError(f"{path}: holds method {stored!r}, but was given as {method!r}")
            maps = f["saliency"]
            if maps.ndim != 3:
                raise ValueError(f"{path}: 'saliency' must be (N, H, W), got shape {maps.shape}")
            index = f["index"][()].astype(np.int64)
            n = maps.shape[0]
            for name in ("index", "target", "label"):
                if f[name].shape != (n,):
                    raise ValueError(f"{path}: {name!r} must be ({n},), got {f[name].shape}")
            if shape is not None and maps.shape[1:] != shape:
                raise ValueError(
                    f"{path}: maps are {maps.shape[1:]}, other shards of {method!r} are {shape}"
                )
            shape = tuple(maps.shape[1:])
        for row, i in enumerate(index.tolist()):
            if i in location:
                raise ValueError(f"{path}: image index {i} is also in {location[i][0]}")
            location[i] = (path, row)
    return _Shards(method, location, shape)


def _read_rows(shards: _Shards, indices: list[int]) -> dict[str, np.ndarray]:
    """Saliency, target and label of ``indices`` (in that order), reading only those rows."""
    out = {
        "saliency": np.zeros((len(indices), *shards.shape), dtype=np.float32),
        "target": np.zeros(len(indices), dtype=np.int64),
        "label": np.zeros(len(indices), dtype=np.int64),
    }
    by_file: dict[Path, list[tuple[int, int]]] = {}
    for k, i in enumerate(indices):
        path, row = shards.location[i]
        by_file.setdefault(path, []).append((row, k))
    for path, pairs in by_file.items():
        pairs.sort()
        rows = [r for r, _ in pairs]
        where = [k for _, k in pairs]
        with _open_h5(path, "saliency file") as f:
            for name in out:
                out[name][where] = f[name][rows]
    if not np.isfinite(out["saliency"]).all():
        raise ValueError(f"method {shards.method!r}: saliency maps contain NaN or infinite values")
    return out


def _read_test_images(test_h5: Path, indices: list[int]):
    verify_checksum(test_h5, "dataset")  # before HDF5 parses a byte of it
    with _open_h5(test_h5, "test split") as f:
        missing = [k for k in TEST_DATASETS if k not in f]
        if missing:
            raise ValueError(f"{test_h5}: not a dataset file, missing dataset(s) {missing}")
        if "class_names" not in f.attrs:
            raise ValueError(f"{test_h5}: missing attribute 'class_names'")
        try:
            class_names = [str(c) for c in json.loads(f.attrs["class_names"])]
        except (TypeError, ValueError) as err:
            raise ValueError(f"{test_h5}: attribute 'class_names' is not a JSON list") from err
        images = f["images"]
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{test_h5}: 'images' must be (N, 3, H, W), got {images.shape}")
        n = images.shape[0]
        bad = [i for i in indices if not 0 <= i < n]
        if bad:
            raise ValueError(
                f"{test_h5}: saliency maps refer to image indices {bad[:5]} outside the split (N={n})"
            )
        return (
            images[indices].astype(np.float32) / 255.0,
            f["labels"][indices].astype(np.int64),
            f["masks"][indices].astype(bool),
            class_names,
        )


def _class_name(class_names: list[str], c: int) -> str:
    return class_names[c] if 0 <= c < len(class_names) else f"class {c}"


def _column_title(method: str, width: int = 11) -> str:
    """Break a long method name at the underscore nearest its middle, so titles never collide."""
    if len(method) <= width or "_" not in method:
        return method
    cuts = [k for k, ch in enumerate(method) if ch == "_"]
    cut = min(cuts, key=lambda k: abs(k - len(method) / 2))
    return f"{method[:cut]}_\n{method[cut + 1 :]}"


def _grey(image_chw: np.ndarray) -> np.ndarray:
    """The image as a lightened, low-contrast greyscale backdrop for a heatmap."""
    lum = 0.299 * image_chw[0] + 0.587 * image_chw[1] + 0.114 * image_chw[2]
    return 0.25 + 0.6 * lum


def _outline(ax, mask: np.ndarray) -> None:
    if mask.any() and not mask.all():
        ax.contour(
            mask.astype(float),
            levels=[0.5],
            colors="white",
            linewidths=1.1,
        ).set(path_effects=OUTLINE)


@styled
def plot_saliency_grid(
    test_h5: str | os.PathLike,
    saliency_files: Mapping[str, Sequence[str | os.PathLike]],
    out_png: str | os.PathLike,
    n_images: int = 6,
    title: str = "",
) -> None:
    """Show the maps of every method on the same few test images.

    Rows are the first ``n_images`` evaluated images (smallest indices present for every
    method). The first column is the image with its ground-truth mask outlined and its
    class name; then one column per method (in the order given): the map as a heatmap
    (jet, 0 = blue to 1 = red) over the greyed image, with the same outline.
    """
    test_h5 = Path(test_h5)
    if not saliency_files:
        raise ValueError("saliency_files is empty: give at least one method with its files")
    if int(n_images) < 1:
        raise ValueError(f"n_images must be at least 1, got {n_images}")
    shards = [_index_shards(str(m), files) for m, files in saliency_files.items()]
    common = set(shards[0].location)
    for s in shards[1:]:
        common &= set(s.location)
    if not common:
        raise ValueError(
            f"no image is present for every method {[s.method for s in shards]} "
            f"(files: {dict((s.method, sorted({str(p) for p, _ in s.location.values()})) for s in shards)})"
        )
    indices = sorted(common)[: int(n_images)]
    images, labels, masks, class_names = _read_test_images(test_h5, indices)
    h, w = images.shape[2:]
    maps = {}
    for s in shards:
        if s.shape != (h, w):
            raise ValueError(
                f"method {s.method!r}: maps are {s.shape}, but the images of {test_h5} are {(h, w)}"
            )
        maps[s.method] = _read_rows(s, indices)
    first = maps[shards[0].method]
    targets = first["target"]

    n_rows, n_cols = len(indices), 1 + len(shards)
    aspect = h / w
    fig = new_figure(
        0.9 + CELL * n_cols + 0.5, CELL * aspect * n_rows + 0.55 + (0.25 if title else 0)
    )
    axes = fig.subplots(n_rows, n_cols, squeeze=False, gridspec_kw={"wspace": 0.02, "hspace": 0.02})
    heat = None
    for r, i in enumerate(indices):
        ax = axes[r, 0]
        ax.imshow(np.clip(images[r].transpose(1, 2, 0), 0, 1), interpolation="nearest")
        _outline(ax, masks[r])
        label = f"{_class_name(class_names, int(labels[r]))}\n#{i}"
        if targets[r] != labels[r]:
            label += f"\nexpl.: {_class_name(class_names, int(targets[r]))}"
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8, labelpad=4)
        backdrop = _grey(images[r])
        for c, s in enumerate(shards, start=1):
            ax = axes[r, c]
            ax.imshow(backdrop, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            heat = ax.imshow(
                maps[s.method]["saliency"][r],
                cmap=SALIENCY_CMAP,
                vmin=0.0,
                vmax=1.0,
                alpha=OVERLAY_ALPHA,
                interpolation="nearest",
            )
            _outline(ax, masks[r])
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    axes[0, 0].set_title("image + mask", fontsize=8.5)
    for c, s in enumerate(shards, start=1):
        axes[0, c].set_title(
            _column_title(s.method), fontsize=8.5, color=method_color(s.method), fontweight="bold"
        )
    bar = fig.colorbar(
        heat, ax=axes[:, -1].tolist(), shrink=min(1.0, 2.5 / (CELL * n_rows)), pad=0.02
    )
    bar.set_label("saliency", fontsize=8)
    bar.set_ticks([0, 0.5, 1])
    bar.ax.tick_params(labelsize=8)
    bar.outline.set_visible(False)
    bar.solids.set_alpha(OVERLAY_ALPHA)
    if title:
        fig.suptitle(title)
    save_figure(fig, out_png)
