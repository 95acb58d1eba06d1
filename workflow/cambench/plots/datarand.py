"""The data randomization sanity check: example maps of each method on the trained
model and on its twin trained on permuted labels, side by side."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from cambench.plots.style import new_figure, save_figure, styled


def read_examples(npz_files: Sequence[str | os.PathLike]) -> list[dict[str, np.ndarray]]:
    """The example files of the data randomization jobs (one per method), in order; a
    file that lacks an array is a ValueError naming it."""
    needed = ("images", "maps", "randomized_maps", "spearman", "method", "model")
    out = []
    for path in npz_files:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in needed if k not in npz.files]
            if missing:
                raise ValueError(f"{path}: not a data randomization example file (no {missing})")
            out.append({k: npz[k] for k in needed})
    return out


@styled
def plot_data_randomization(
    npz_files: Sequence[str | os.PathLike], out_png: str | os.PathLike
) -> None:
    """One row per method: for each example image, the map on the trained model and the
    map on the model trained on permuted labels (overlaid on the image in grey), with
    that image's Spearman correlation between the two. Maps that look alike in both
    columns do not depend on what the model learned."""
    examples = read_examples(npz_files)
    if not examples:
        raise ValueError("no data randomization example files given")
    k = min(len(e["images"]) for e in examples)
    fig = new_figure(1.3 * 2 * k + 0.8, 1.45 * len(examples) + 0.3)
    axes = fig.subplots(len(examples), 2 * k, squeeze=False)
    for row, example in enumerate(examples):
        grey = example["images"][:k].astype(np.float32).mean(axis=1) / 255.0
        for i in range(k):
            for j, (key, label) in enumerate((("maps", "trained"), ("randomized_maps", "perm."))):
                ax = axes[row, 2 * i + j]
                ax.imshow(grey[i], cmap="gray", vmin=0, vmax=1)
                ax.imshow(example[key][i].astype(np.float32), cmap="jet", alpha=0.5, vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                title = f"{label}" if j == 0 else f"{label} ρ={float(example['spearman'][i]):.2f}"
                ax.set_title(title, fontsize=7)
        axes[row, 0].set_ylabel(str(example["method"]), fontsize=8)
    fig.suptitle(f"Data randomization: {examples[0]['model']} vs permuted labels", fontsize=9)
    save_figure(fig, out_png)
