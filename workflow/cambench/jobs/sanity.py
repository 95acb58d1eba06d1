"""The sanity jobs of one method on one model: the model-parameter randomization check
(:func:`cambench.metrics.randomization.randomization_test`), and the optional checks of
``sanity.random_logit``, ``sanity.smooth_mprt`` and ``sanity.efficient_mprt``
(:func:`run_checks`)."""

from __future__ import annotations

import json
import os
from typing import Any

import pandas as pd
import torch

from cambench import joblog
from cambench.data.store import read_split
from cambench.jobs.saliency import explained_classes
from cambench.metrics.randomization import (
    efficient_mprt,
    random_logit,
    randomization_test,
    smooth_mprt,
)
from cambench.metrics.statistics import bootstrap_mean_ci
from cambench.models import load_checkpoint
from cambench.saliency.registry import resolve_entry
from cambench.table_io import write_csv


def _load(
    model_path: str | os.PathLike,
    data_path: str | os.PathLike,
    n_images: int,
    target: str,
    batch_size: int,
    device: torch.device,
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The model, the first ``n_images`` test images and their explained classes."""
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
    return model, images, targets


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
    label = method
    spec, params = resolve_entry(label, params)
    method = spec.name
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
    model, images, targets = _load(model_path, data_path, n_images, target, batch_size, device)
    n = images.shape[0]
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


#: The optional checks and their settings' defaults (``sanity.<check>`` in the config).
CHECKS: dict[str, dict[str, Any]] = {
    "random_logit": {},
    "smooth_mprt": {"n_samples": 10, "noise": 0.1},
    "efficient_mprt": {"n_bins": 100},
}


def run_checks(
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
    checks: dict[str, dict[str, Any]],
    statistics: dict[str, Any],
) -> pd.DataFrame:
    """Run the ``checks`` (keys of :data:`CHECKS`, settings over its defaults) on the
    first ``n_images`` test images; write one CSV row per check and step: ``test``,
    ``step`` and ``randomized`` (the cascade, as the randomization CSV's), ``value``
    (mean over the images: SSIM for random_logit, Spearman for smooth_mprt, the relative
    entropy rise for efficient_mprt) with its bootstrap interval, and ``settings``."""
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown sanity check(s) {unknown}; valid: {', '.join(CHECKS)}")
    label = method
    spec, params = resolve_entry(label, params)
    method = spec.name
    settings = {name: {**CHECKS[name], **(checks[name] or {})} for name in checks}
    start = joblog.header(
        "sanity checks",
        {"model": model_name, "method": method, "checks": settings, "images": n_images},
        [str(model_path), str(data_path)],
    )
    model, images, targets = _load(model_path, data_path, n_images, target, batch_size, device)
    common = {"layer": layer or None, "seed": seed, "batch_size": batch_size}
    per_test: list[tuple[str, list[int], list[str], torch.Tensor]] = []
    if "random_logit" in settings:
        values = random_logit(model, images, targets, method, params, **common)
        per_test.append(("random_logit", [0], [""], values[None]))
    if "smooth_mprt" in settings:
        s = settings["smooth_mprt"]
        result = smooth_mprt(
            model, images, targets, method, params, **common,
            n_samples=int(s["n_samples"]), noise=float(s["noise"]), noise_seed=seed,
        )  # fmt: skip
        steps = list(range(len(result.blocks)))
        per_test.append(("smooth_mprt", steps, result.blocks, result.correlation))
    if "efficient_mprt" in settings:
        values = efficient_mprt(
            model, images, targets, method, params, **common,
            n_bins=int(settings["efficient_mprt"]["n_bins"]),
        )  # fmt: skip
        per_test.append(("efficient_mprt", [0], ["all"], values[None]))
    frames = []
    for test, steps, blocks, values in per_test:
        mean, low, high = bootstrap_mean_ci(
            values.T.cpu().numpy(),
            int(statistics["resamples"]),
            float(statistics["confidence"]),
            seed,
        )
        frames.append(
            pd.DataFrame(
                {
                    "model": model_name,
                    "method": label,
                    "test": test,
                    "step": steps,
                    "randomized": blocks,
                    "value": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "n_images": images.shape[0],
                    "settings": json.dumps(settings[test], sort_keys=True),
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    write_csv(out_csv, frame, "%.6g")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    joblog.footer(start, [str(out_csv)])
    return frame
