"""The data randomization job: one method's maps on the trained model and on the same
architecture trained on permuted labels (:func:`cambench.metrics.similarity.data_randomization_test`).

Writes a one-row CSV (the similarities' means with their bootstrap intervals, the flag,
both models' accuracies and every setting and seed) and an ``.npz`` of the first
example images and both maps for the figure (:mod:`cambench.plots.datarand`). Both
files are byte-identical when rerun (the ``.npz``'s zip entries carry a fixed date).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Any

import numpy as np
import pandas as pd
import torch

from cambench import joblog
from cambench.atomic import atomic_output
from cambench.data.store import read_split
from cambench.jobs.saliency import explained_classes
from cambench.metrics.similarity import data_randomization_test
from cambench.metrics.statistics import bootstrap_mean_ci
from cambench.models import load_checkpoint
from cambench.saliency.registry import resolve_entry
from cambench.table_io import read_json, write_csv

# Images kept in the .npz for the side-by-side figure.
EXAMPLES = 4
# The per-image similarities, in the CSV's column order.
SIMILARITIES = ("spearman", "spearman_abs", "spearman_signed", "ssim")


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """An uncompressed ``.npz`` (``np.load`` reads it) whose bytes depend on the arrays
    only: each entry is ``np.save``'s bytes under a fixed zip date; written atomically."""
    with atomic_output(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(array), allow_pickle=False)
            archive.writestr(
                zipfile.ZipInfo(f"{name}.npy", (1980, 1, 1, 0, 0, 0)), buffer.getvalue()
            )


def run(
    model_path: str | os.PathLike,
    randomized_path: str | os.PathLike,
    randomized_history: str | os.PathLike,
    data_path: str | os.PathLike,
    out_csv: str | os.PathLike,
    out_examples: str | os.PathLike,
    method: str,
    params: dict[str, Any],
    layer: str | None,
    n_images: int,
    target: str,
    batch_size: int,
    device: torch.device,
    model_name: str,
    seed: int,
    threshold: float,
    statistics: dict[str, Any],
) -> pd.DataFrame:
    """The first ``n_images`` test images, the classes chosen as ``eval.target`` by the
    trained model and explained on both models; ``seed`` is the label permutation's
    (recorded; the randomized model's history must agree), ``statistics`` the bootstrap's
    ``resamples``, ``confidence`` (and ``seed``). ``method`` is the ``methods:``
    entry's label (the CSV's ``method``); a variant's ``params`` carry the method it
    runs under ``"method"``."""
    label = method
    spec, params = resolve_entry(label, params)
    method = spec.name
    history = read_json(randomized_history, "training history")
    if history.get("permute_labels") != int(seed):
        raise ValueError(
            f"{randomized_history}: trained with label permutation seed "
            f"{history.get('permute_labels')!r}, expected {seed} "
            "(config key 'sanity.data_randomization.seed'); delete it and rerun"
        )
    start = joblog.header(
        "data randomization",
        {
            "model": model_name,
            "method": method,
            "parameters": params,
            "images": n_images,
            "permutation seed": seed,
            "threshold": threshold,
            "device": str(device),
        },
        [str(model_path), str(randomized_path), str(data_path)],
    )
    model = load_checkpoint(model_path, map_location=device)
    randomized = load_checkpoint(randomized_path, map_location=device)
    with read_split(data_path) as split:  # reads the first n images only
        n = int(n_images)
        if n < 1 or n > len(split):
            raise ValueError(
                f"config key 'sanity.data_randomization.n_images': {n} images, but "
                f"{data_path} holds {len(split)}"
            )
        if spec.needs_masks and not split.attrs.get("has_masks", False):
            raise ValueError(f"{data_path}: method {method!r} reads object masks; it has none")
        images = split.float_images(slice(0, n)).to(device)
        labels = split.labels[:n].to(device)
        masks = split.masks[slice(0, n)].to(device) if spec.needs_masks else None
    targets = torch.cat(
        [
            explained_classes(model, images[i : i + batch_size], labels[i : i + batch_size], target)
            for i in range(0, n, batch_size)
        ]
    )
    result = data_randomization_test(
        model,
        randomized,
        images,
        targets,
        method,
        params,
        layer=layer or None,
        batch_size=batch_size,
        object_masks=masks,
    )
    per_image = torch.stack([getattr(result, s) for s in SIMILARITIES], dim=1).cpu().numpy()
    mean, low, high = bootstrap_mean_ci(
        per_image,
        int(statistics["resamples"]),
        float(statistics["confidence"]),
        int(statistics.get("seed", 0)),
    )
    row: dict[str, Any] = {"model": model_name, "method": label}
    for j, name in enumerate(SIMILARITIES):
        row.update({name: mean[j], f"{name}_ci_low": low[j], f"{name}_ci_high": high[j]})
    row.update(
        {
            "data_independent": result.data_independent(threshold),
            "threshold": threshold,
            "n_images": n,
            "target": target,
            "params": spec_json(params),
            "permutation_seed": int(seed),
            "epochs": len(history.get("epochs", [])),
            "randomized_train_acc": float(history["train_acc"]),
            "randomized_test_acc": float(history["test_acc"]),
            "bootstrap_resamples": int(statistics["resamples"]),
            "bootstrap_confidence": float(statistics["confidence"]),
        }
    )
    frame = pd.DataFrame([row])
    write_csv(out_csv, frame, "%.6g")
    k = min(EXAMPLES, n)
    write_npz(
        out_examples,
        {
            "images": (images[:k] * 255).round().to(torch.uint8).cpu().numpy(),
            "maps": result.maps[:k].cpu().numpy().astype(np.float16),
            "randomized_maps": result.randomized_maps[:k].cpu().numpy().astype(np.float16),
            "targets": targets[:k].cpu().numpy(),
            "spearman": result.spearman[:k].cpu().numpy(),
            "method": np.array(label),
            "model": np.array(model_name),
        },
    )
    print(frame.T.to_string(header=False), flush=True)
    joblog.footer(start, [str(out_csv), str(out_examples)])
    return frame


def spec_json(params: dict[str, Any]) -> str:
    """The method's parameters as the CSV records them (sorted JSON)."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"))
