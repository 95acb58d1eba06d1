"""Mean insertion and deletion curves per method."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cambench.auc import trapezoid_auc
from cambench.plots.style import (
    method_color,
    method_linestyle,
    new_figure,
    save_figure,
    styled,
)

CURVE_ARRAYS = ("insertion", "deletion", "index")


def read_curves(
    method: str, files: Sequence[str | os.PathLike]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate the curve shards of one method: (insertion, deletion, index).

    Errors name the file (or the method when it has no shard or no image).
    """
    if isinstance(files, (str, os.PathLike)) or not files:
        raise ValueError(
            f"method {method!r}: expected a non-empty list of curve files, got {files!r}"
        )
    insertion, deletion, index = [], [], []
    for file in files:
        path = Path(file)
        try:
            with np.load(path) as npz:
                missing = [k for k in CURVE_ARRAYS if k not in npz.files]
                if missing:
                    raise ValueError(f"{path}: missing array(s) {missing} (method {method!r})")
                ins, dele, idx = (np.asarray(npz[k]) for k in CURVE_ARRAYS)
        except (OSError, zipfile.BadZipFile, EOFError) as err:
            raise ValueError(f"{path}: cannot read curve file ({err})") from err
        if ins.ndim != 2 or ins.shape[1] < 2:
            raise ValueError(f"{path}: 'insertion' must be (N, steps+1), got shape {ins.shape}")
        if dele.shape != ins.shape:
            raise ValueError(
                f"{path}: 'deletion' shape {dele.shape} differs from 'insertion' {ins.shape}"
            )
        if idx.shape != (ins.shape[0],):
            raise ValueError(f"{path}: 'index' must be ({ins.shape[0]},), got {idx.shape}")
        if insertion and ins.shape[1] != insertion[0].shape[1]:
            raise ValueError(
                f"{path}: {ins.shape[1] - 1} steps, but the other shards of method "
                f"{method!r} have {insertion[0].shape[1] - 1}"
            )
        insertion.append(ins.astype(float))
        deletion.append(dele.astype(float))
        index.append(idx.astype(np.int64))
    ins, dele, idx = np.concatenate(insertion), np.concatenate(deletion), np.concatenate(index)
    if ins.shape[0] == 0:
        raise ValueError(
            f"method {method!r}: the curve files hold no image ({list(map(str, files))})"
        )
    if np.unique(idx).size != idx.size:
        raise ValueError(f"method {method!r}: an image index occurs in more than one shard")
    if not (np.isfinite(ins).all() and np.isfinite(dele).all()):
        raise ValueError(f"method {method!r}: the curves contain NaN or infinite values")
    return ins, dele, idx


@styled
def plot_curves(
    curve_files: Mapping[str, Sequence[str | os.PathLike]],
    out_png: str | os.PathLike,
    title: str = "",
) -> None:
    """Mean insertion (left) and deletion (right) curves per method.

    ``curve_files`` maps method names to their ``.npz`` shards. The x axis is the fraction
    of pixels inserted / deleted in saliency order, the y axis the mean probability of the
    explained class. The legend gives each method's AUC in percent, best first (high for
    insertion, low for deletion); sanity-check baselines are dashed.
    """
    if not curve_files:
        raise ValueError("curve_files is empty: give at least one method with its curve files")
    curves = {}
    for method, files in curve_files.items():
        ins, dele, _ = read_curves(str(method), files)
        curves[str(method)] = (ins.mean(axis=0), dele.mean(axis=0), ins.shape[0])

    n_methods = len(curves)
    legend_rows = -(-n_methods // 2)
    fig = new_figure(7.0, 2.9 + 0.17 * legend_rows)
    axes = fig.subplots(1, 2, sharey=True)
    panels = (
        (axes[0], 0, "Insertion", "fraction of pixels inserted", True),
        (axes[1], 1, "Deletion", "fraction of pixels deleted", False),
    )
    n_images = sorted({n for *_, n in curves.values()})
    for ax, which, name, xlabel, higher_is_better in panels:
        entries = []
        for method, (*means, _) in curves.items():
            mean = means[which]
            x = np.linspace(0.0, 1.0, mean.shape[0])
            auc = float(trapezoid_auc(np.asarray(mean, dtype=float)))
            (line,) = ax.plot(
                x,
                mean,
                color=method_color(method),
                linestyle=method_linestyle(method),
                label=f"{method}  {100 * auc:.1f}",
            )
            entries.append((auc, line))
        entries.sort(key=lambda e: -e[0] if higher_is_better else e[0])
        ax.set_title(f"{name} ({'higher' if higher_is_better else 'lower'} AUC is better)")
        ax.set_xlabel(xlabel)
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True)
        ax.legend(
            [line for _, line in entries],
            [line.get_label() for _, line in entries],
            title="method  AUC (%)",
            loc="upper center",
            bbox_to_anchor=(0.5, -0.2),
            ncol=2,
            frameon=False,
            handlelength=2.2,
            columnspacing=1.2,
        )
    axes[0].set_ylabel("mean probability of the class")
    axes[1].tick_params(labelleft=True)
    n_text = (
        f"n = {n_images[0]} images"
        if len(n_images) == 1
        else f"n = {n_images[0]}–{n_images[-1]} images"
    )
    fig.suptitle(f"{title}   ({n_text})" if title else n_text)
    save_figure(fig, out_png)
