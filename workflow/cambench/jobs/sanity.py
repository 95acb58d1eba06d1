"""The sanity job: the model-parameter randomization check of one method on one model
(:func:`cambench.metrics.randomization.randomization_test`)."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
import torch

from cambench import joblog
from cambench.data.store import read_split
from cambench.jobs.saliency import explained_classes
from cambench.metrics.randomization import randomization_test
from cambench.metrics.statistics import bootstrap_mean_ci
from cambench.models import load_checkpoint
from cambench.saliency import get_method
from cambench.table_io import write_csv


def run(
    model_path: str | os.PathLike,
    data_path: str | os.PathLike,
    out_csv: str | os.PathLike,
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
    """The first ``n_images`` test images, classes chosen as ``eval.target`` by the
    trained model; write one CSV row per cascade step (mean Spearman correlation and
    its bootstrap interval over the images — ``statistics``: resamples, confidence —
    and whether the method is flagged as model independent at ``threshold``).

    ``method`` is the ``methods:`` entry's label (the CSV's ``method``); a variant's
    ``params`` carry the method it runs under ``"method"``."""
    label, params = method, dict(params)
    method = params.pop("method", label)
    params = get_method(method).resolve_params(params)
    start = joblog.header(
        "randomization",
        {
            "model": model_name,
            "method": method,
            "parameters": params,
            "images": n_images,
            "seed": seed,
            "threshold": threshold,
            "device": str(device),
        },
        [str(model_path), str(data_path)],
    )
    model = load_checkpoint(model_path, map_location=device)
    with read_split(data_path) as split:  # reads the first n images only
        n = min(int(n_images), len(split))
        images = split.float_images(slice(0, n)).to(device)
        labels = split.labels[:n].to(device)
    targets = torch.cat(
        [
            explained_classes(model, images[i : i + batch_size], labels[i : i + batch_size], target)
            for i in range(0, n, batch_size)
        ]
    )
    result = randomization_test(
        model,
        images,
        targets,
        method,
        params,
        layer=layer or None,
        seed=seed,
        batch_size=batch_size,
    )
    per_image = result.correlation.T.cpu().numpy()  # (images, steps + 1)
    mean, low, high = bootstrap_mean_ci(
        per_image, int(statistics["resamples"]), float(statistics["confidence"]), seed
    )
    frame = pd.DataFrame(
        {
            "model": model_name,
            "method": label,
            "step": range(len(result.blocks)),
            "randomized": result.blocks,
            "spearman": mean,
            "ci_low": low,
            "ci_high": high,
            "n_images": n,
            "threshold": threshold,
            "model_independent": result.model_independent(threshold),
        }
    )
    write_csv(out_csv, frame, "%.6g")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    joblog.footer(start, [str(out_csv)])
    return frame
