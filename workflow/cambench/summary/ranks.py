r"""Ranks across metrics, as LATEC reports them: per model, each method's rank on each
metric, its median and mean rank, and a bootstrap interval of the mean rank.

For one model with methods :math:`m = 1 \dots M` evaluated on the same images and
metrics :math:`k = 1 \dots K` (each with its direction from
:mod:`cambench.metric_table`), the rank :math:`r_{mk}` of method :math:`m` on metric
:math:`k` is its position when the methods' means :math:`\bar v_{mk}` are sorted
from best to worst (1 = best; ties share their average rank; means equal to
:data:`TIE_DECIMALS` decimals in the table's unit tie, so that float noise between
methods that are equal by construction — CAM, Grad-CAM and XGrad-CAM on a GAP→Linear
model — does not order them). A method's summary is
the median and the mean of its ranks over the metrics,

.. math::
    \tilde r_m = \operatorname{median}_k r_{mk}, \qquad
    \bar r_m = \frac{1}{K} \sum_k r_{mk},

and the interval of :math:`\bar r_m` is the percentile bootstrap over the images:
each resample draws the images with replacement (the same images for every method
and metric, so the comparison stays paired), recomputes every mean, ranks and
:math:`\bar r_m`. Klein et al., "Navigating the Maze of Explainable AI: A Systematic
Approach to Evaluating Methods and Metrics" (LATEC), NeurIPS 2024 Datasets and
Benchmarks, https://arxiv.org/abs/2409.16756.

Pairs listed as ``excluded`` (degenerate maps) are left out of the ranking; sanity
baselines (``fakecam``, ``random``) and methods flagged model-independent stay in it
— a method ranked below ``random`` says something — and are marked by the renderer.

>>> import pandas as pd
>>> per_image = pd.DataFrame({
...     "model": ["m"] * 4, "method": ["a", "a", "b", "b"], "index": [0, 1, 0, 1],
...     "AD": [10.0, 20.0, 30.0, 40.0], "insertion": [50.0, 60.0, 70.0, 80.0]})
>>> ranks = rank_table(per_image, resamples=100, confidence=0.95, seed=0)
>>> ranks[["method", "rank_AD", "rank_insertion", "mean_rank"]].to_dict("list")
{'method': ['a', 'b'], 'rank_AD': [1.0, 2.0], 'rank_insertion': [2.0, 1.0], 'mean_rank': [1.5, 1.5]}
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd

from cambench.metric_table import COLUMNS, metric
from cambench.metrics.statistics import bootstrap_means

#: Means that agree to this many decimals (in the per-image CSVs' unit: percent for the
#: default metrics) are ties.
TIE_DECIMALS = 3


def average_ranks_rows(keys: np.ndarray) -> np.ndarray:
    """Ranks 1..M of each row of (R, M) ``keys`` (smaller key = better = rank 1), ties
    averaged: ``rank = 1 + #(smaller) + (#(equal) - 1) / 2``. NaN keys rank NaN."""
    keys = np.asarray(keys, dtype=float)
    smaller = (keys[..., None, :] < keys[..., :, None]).sum(-1)
    equal = (keys[..., None, :] == keys[..., :, None]).sum(-1)
    ranks = 1.0 + smaller + (equal - 1) / 2.0
    return np.where(np.isnan(keys), np.nan, ranks)


def _model_values(group: pd.DataFrame, metrics: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The methods of one model and their per-image values (images, methods, metrics),
    on the images every method has (joined on ``index``)."""
    methods = list(dict.fromkeys(group["method"]))
    frames = [
        group[group["method"] == m].drop_duplicates("index").set_index("index")[list(metrics)]
        for m in methods
    ]
    common = frames[0].index
    for frame in frames[1:]:
        common = common.intersection(frame.index)
    common = common.sort_values()
    values = np.stack([f.loc[common].to_numpy(dtype=float) for f in frames], axis=1)
    return methods, values


def rank_table(
    per_image: pd.DataFrame,
    resamples: int,
    confidence: float,
    seed: int,
    excluded: Collection[tuple[str, str]] = (),
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per model × method: ``rank_<metric>`` per metric, ``median_rank``,
    ``mean_rank`` with ``mean_rank_ci_low``/``_high``, ``n_metrics`` and ``n_images``
    (the images shared by the model's methods). Metrics without a finite mean for
    every method of a model (e.g. localization without object masks) are left out of
    that model's ranking. ``per_image`` has ``model``, ``method``, ``index`` and the
    metric columns (percent, as in the per-image CSVs)."""
    metrics = [c for c in (metrics or COLUMNS) if c in per_image.columns]
    excluded = {(str(a), str(b)) for a, b in excluded}
    rows = []
    for model, group in per_image.groupby("model", sort=False):
        keep = [(str(model), str(m)) not in excluded for m in group["method"]]
        group = group[keep]
        if group.empty:
            continue
        methods, values = _model_values(group, metrics)
        with warnings.catch_warnings():  # an all-NaN metric (no masks): left out below
            warnings.simplefilter("ignore", RuntimeWarning)
            means = np.nanmean(values, axis=0) if len(values) else np.full(values.shape[1:], np.nan)
        usable = [k for k in range(len(metrics)) if np.isfinite(means[:, k]).all()]
        sign = np.array([1.0 if metric(metrics[k]).lower_is_better else -1.0 for k in usable])
        keys = np.round(means[:, usable] * sign, TIE_DECIMALS)
        ranks = average_ranks_rows(keys.T).T  # (methods, metrics)
        n_images = values.shape[0]
        if usable and n_images:
            flat = values[:, :, usable].reshape(n_images, -1)
            boot = bootstrap_means(flat, resamples, seed).reshape(
                resamples, len(methods), len(usable)
            )
            boot_keys = np.round(np.swapaxes(boot * sign, 1, 2), TIE_DECIMALS)
            boot_ranks = average_ranks_rows(boot_keys)  # (R, K, M)
            mean_boot = np.nanmean(boot_ranks, axis=1)  # (R, M)
            alpha = (1 - confidence) / 2
            low, high = np.quantile(mean_boot, [alpha, 1 - alpha], axis=0)
        else:
            low = high = np.full(len(methods), np.nan)
        for i, method in enumerate(methods):
            row = {"model": model, "method": method}
            for j, k in enumerate(usable):
                row[f"rank_{metrics[k]}"] = float(ranks[i, j])
            has = bool(usable)
            row["median_rank"] = float(np.median(ranks[i])) if has else np.nan
            row["mean_rank"] = float(np.mean(ranks[i])) if has else np.nan
            row["mean_rank_ci_low"] = float(low[i])
            row["mean_rank_ci_high"] = float(high[i])
            row["n_metrics"] = len(usable)
            row["n_images"] = n_images
            rows.append(row)
    return pd.DataFrame(rows)
