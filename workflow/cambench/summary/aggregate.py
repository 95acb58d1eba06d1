"""Aggregation of per-image metrics: the statistics behind the summary and
comparison tables (no file I/O, no formatting; see :mod:`cambench.summary.render`).

Summary: one row per model × method with the mean of every metric and its
percentile-bootstrap confidence interval over the images, the explanation time per
image and the protocol. Comparison: each non-baseline model against its reference,
per method and metric: the paired difference over the same images (joined on
``index``), its bootstrap interval and the paired Wilcoxon signed-rank p-value.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from cambench.metric_table import ALL_COLUMNS, COLUMNS, METRICS
from cambench.metrics.protocols import Protocol
from cambench.metrics.statistics import bootstrap_mean_ci, bootstrap_means, wilcoxon_signed_rank

# ------------------------------------------------------------------------ summary


def _protocol_name(spec: object) -> str:
    if not isinstance(spec, str) or not spec:
        return ""
    try:
        return str(json.loads(spec).get("protocol", ""))
    except (json.JSONDecodeError, AttributeError):
        return spec


def degenerate_counts(per_image: pd.DataFrame) -> pd.DataFrame:
    """Per model × method with degenerate maps (the per-image ``degenerate`` code > 0):
    ``degenerate_maps`` and ``n_images``; empty when there are none."""
    columns = ["model", "method", "degenerate_maps", "n_images"]
    if "degenerate" not in per_image.columns:
        return pd.DataFrame(columns=columns)
    bad = per_image["degenerate"].fillna(0).to_numpy() > 0
    grouped = per_image.assign(degenerate_maps=bad).groupby(["model", "method"], sort=False)
    counts = grouped.agg(
        degenerate_maps=("degenerate_maps", "sum"), n_images=("degenerate_maps", "size")
    ).reset_index()
    counts["degenerate_maps"] = counts["degenerate_maps"].astype(int)
    return counts[counts["degenerate_maps"] > 0][columns].reset_index(drop=True)


def describe_protocols(per_image: pd.DataFrame) -> list[str]:
    """One human-readable line per distinct protocol in the per-image metrics."""
    if "protocol" not in per_image.columns:
        return []
    lines = []
    for spec in dict.fromkeys(per_image["protocol"].dropna()):
        try:
            d = json.loads(spec)
            d["name"] = d.pop("protocol")
            lines.append(Protocol(**d).describe())
        except (json.JSONDecodeError, TypeError, KeyError):
            lines.append(str(spec))
    return lines


def summarize_metrics(
    per_image: pd.DataFrame, resamples: int, confidence: float, seed: int
) -> pd.DataFrame:
    """One row per model × method: number of images, each metric's mean over the images
    with its ``confidence`` percentile-bootstrap interval (columns ``<metric>``,
    ``<metric>_ci_low``, ``<metric>_ci_high``; the images are resampled, ``resamples``
    times, seeded), the explanation time per image (``ms_per_image``) and the protocol.

    NaN values (e.g. localization of an image without an object mask) are skipped.
    """
    # the metrics the run chose (metrics.include), in the metric table's order
    missing = [c for c in ("model", "method", *COLUMNS) if c not in per_image.columns]
    if missing:
        raise ValueError(f"per-image metrics lack columns {missing}")
    present = [c for c in ALL_COLUMNS if c in per_image.columns]
    rows = []
    for (model, method), group in per_image.groupby(["model", "method"], sort=False):
        values = group[present].to_numpy(dtype=float)
        mean, low, high = bootstrap_mean_ci(values, resamples, confidence, seed)
        row: dict[str, Any] = {"model": model, "method": method, "n_images": len(group)}
        for k, column in enumerate(present):
            row[column] = mean[k]
            row[f"{column}_ci_low"] = low[k]
            row[f"{column}_ci_high"] = high[k]
        if "seconds" in group.columns:
            row["ms_per_image"] = 1000 * float(group["seconds"].mean())
        protocols = sorted({_protocol_name(p) for p in group.get("protocol", pd.Series([""]))})
        row["protocol"] = "+".join(p for p in protocols if p)
        if "metric_params" in group.columns:  # the added metrics' parameters and seeds
            row["metric_params"] = "+".join(sorted(set(group["metric_params"].astype(str))))
        if "registered_method" in group.columns:  # only where a label differs from it
            ran = group["registered_method"].dropna().astype(str)
            row["registered_method"] = ran.iloc[0] if len(ran) else method
        rows.append(row)
    return pd.DataFrame(rows)


def model_table(histories: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per trained model from its training history: test accuracy (%), the
    held-out gradient cosine after the last epoch, parameters and training time."""
    rows = []
    for history in histories:
        epochs = history.get("epochs", [])
        rows.append(
            {
                "model": history["model"],
                "kind": history.get("kind", ""),
                "epochs": len(epochs),
                "test_accuracy": 100 * float(history["test_acc"]),
                "grad_cosine": float(epochs[-1].get("grad_cosine", float("nan")))
                if epochs
                else float("nan"),
                "parameters": history.get("parameters"),
                "trainable_parameters": history.get("trainable_parameters"),
                "train_seconds": float(history.get("seconds", float("nan"))),
            }
        )
    return pd.DataFrame(rows)


def duplicate_images(per_image: pd.DataFrame) -> list[str]:
    """Problems with the images scored per model × method: an image counted twice (a
    shard copied over another), or a method of a model scored on other images than
    the model's other methods (a missing shard). Empty when every pair is sound."""
    problems = []
    expected: dict[str, frozenset[int]] = {}
    for (model, method), group in per_image.groupby(["model", "method"], sort=False):
        index = group["index"].to_numpy()
        twice = sorted(set(index[pd.Series(index).duplicated().to_numpy()].tolist()))
        if twice:
            problems.append(f"{model} × {method}: image(s) {twice[:10]} counted more than once")
        seen = frozenset(index.tolist())
        first = expected.setdefault(model, seen)
        if seen != first:
            missing = sorted(first - seen)[:10]
            extra = sorted(seen - first)[:10]
            problems.append(
                f"{model} × {method}: other images than the model's first method "
                f"(missing {missing}, extra {extra})"
            )
    return problems


def randomization_verdicts(randomization: pd.DataFrame) -> pd.DataFrame:
    """Per model × method: the lowest and the last mean Spearman correlation of the
    cascade and the ``model_independent`` flag."""
    columns = ["model", "method", "min_spearman", "final_spearman", "model_independent"]
    if randomization.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for (model, method), group in randomization.groupby(["model", "method"], sort=False):
        steps = group.sort_values("step")
        after = steps[steps["step"] > 0]
        rows.append(
            {
                "model": model,
                "method": method,
                "min_spearman": float(after["spearman"].min()),
                "final_spearman": float(steps["spearman"].iloc[-1]),
                "model_independent": bool(steps["model_independent"].iloc[0]),
            }
        )
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------- comparison


COMPARISON_COLUMNS = [
    "model",
    "reference",
    "relation",
    "method",
    "metric",
    "direction",
    "n_pairs",
    "model_mean",
    "reference_mean",
    "difference",
    "ci_low",
    "ci_high",
    "wilcoxon_p",
]


def compare_models(
    per_image: pd.DataFrame,
    pairs: Sequence[tuple[str, str, str]],
    resamples: int,
    confidence: float,
    seed: int,
) -> pd.DataFrame:
    """Paired comparison of each (model, reference) on every method both have.

    Pairs are the images scored for both (joined on ``index``); a metric's pairs where
    either value is NaN are left out. ``difference`` = mean over pairs of
    ``model - reference`` (percentage points), with its percentile-bootstrap interval
    (pairs resampled) and the two-sided Wilcoxon signed-rank p-value.
    """
    rows = []
    alpha = (1 - confidence) / 2
    for model, reference, relation in pairs:
        ours = per_image[per_image["model"] == model]
        theirs = per_image[per_image["model"] == reference]
        methods = [m for m in dict.fromkeys(ours["method"]) if m in set(theirs["method"])]
        for method in methods:
            joined = ours[ours["method"] == method].merge(
                theirs[theirs["method"] == method], on="index", suffixes=("_m", "_r")
            )
            for entry in METRICS:
                metric, direction = entry.column, entry.direction
                if f"{metric}_m" not in joined.columns:  # not chosen by metrics.include
                    continue
                a = joined[f"{metric}_m"].to_numpy(dtype=float)
                b = joined[f"{metric}_r"].to_numpy(dtype=float)
                keep = np.isfinite(a) & np.isfinite(b)
                a, b = a[keep], b[keep]
                d = a - b
                if d.size:
                    means = bootstrap_means(d, resamples, seed)
                    low, high = (
                        np.quantile(means, [alpha, 1 - alpha]) if d.size > 1 else (np.nan,) * 2
                    )
                    p = wilcoxon_signed_rank(d)[1]
                else:
                    low = high = p = np.nan
                rows.append(
                    {
                        "model": model,
                        "reference": reference,
                        "relation": relation,
                        "method": method,
                        "metric": metric,
                        "direction": direction,
                        "n_pairs": int(d.size),
                        "model_mean": a.mean() if a.size else np.nan,
                        "reference_mean": b.mean() if b.size else np.nan,
                        "difference": d.mean() if d.size else np.nan,
                        "ci_low": low,
                        "ci_high": high,
                        "wilcoxon_p": p,
                    }
                )
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


__all__ = [
    "COMPARISON_COLUMNS",
    "compare_models",
    "describe_protocols",
    "duplicate_images",
    "model_table",
    "randomization_verdicts",
    "summarize_metrics",
]
