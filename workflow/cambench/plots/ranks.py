"""The rank table across metrics as a heatmap: one panel per model, its methods (best
mean rank on top) × the metrics, each cell the method's rank on that metric, and a last
column with the mean rank. Reads ``ranks.csv`` (:func:`cambench.jobs.summarize.ranks`).
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from cambench.best import SANITY_BASELINES
from cambench.metric_table import ALL_COLUMNS, metric
from cambench.plots.style import new_figure, save_figure, styled
from cambench.plots.summary_heatmap import CMAP
from cambench.table_io import read_table

CELL_W, CELL_H = 0.42, 0.26  # inches per cell
MAX_PANELS_PER_ROW = 3
NOTE = (
    "rank 1 = best on the metric (ties share their average rank); dark = better rank; "
    "mean: the mean rank over the metrics (its bootstrap interval: ranks.csv, summary.md); "
    "italic: sanity baseline; †: flagged by the randomization check"
)


def read_ranks(ranks_csv: str | os.PathLike) -> pd.DataFrame:
    """Read and check ``ranks.csv``; errors name the file and the offending column."""
    path = Path(ranks_csv)
    df = read_table(path, "ranks", required=("model", "method", "mean_rank"))
    if df.empty:
        raise ValueError(f"{path}: the rank table has no rows")
    if not rank_metrics(df):
        raise ValueError(f"{path}: no rank_<metric> column (e.g. rank_AD)")
    for column in ("mean_rank", *(f"rank_{c}" for c in rank_metrics(df))):
        try:
            df[column] = pd.to_numeric(df[column], errors="raise").astype(float)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}: column {column!r} is not numeric ({err})") from err
    for column in ("model", "method"):
        if df[column].isna().any():
            raise ValueError(f"{path}: column {column!r} has empty values")
        df[column] = df[column].astype(str)
    if df.duplicated(["model", "method"]).any():
        raise ValueError(f"{path}: duplicate rows for a (model, method)")
    return df


def rank_metrics(df: pd.DataFrame) -> list[str]:
    """The metrics ranked in ``df`` (its ``rank_<metric>`` columns), in table order."""
    return [c for c in ALL_COLUMNS if f"rank_{c}" in df.columns]


def _flag(df: pd.DataFrame, column: str) -> np.ndarray:
    values = df.get(column, pd.Series(False, index=df.index))
    return values.astype(str).str.lower().isin(("true", "1")).to_numpy()


def _format_rank(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{value:g}"


def plot_rank_heatmap(ranks_csv: str | os.PathLike, out_png: str | os.PathLike) -> None:
    """Draw ``ranks.csv`` as :func:`rank_heatmap_figure` and save it (PNG and PDF)."""
    save_figure(rank_heatmap_figure(ranks_csv), out_png)


@styled
def rank_heatmap_figure(ranks_csv: str | os.PathLike) -> Figure:
    """Methods × metrics per model, cell = the method's rank on the metric among the
    model's ranked methods (1 = best; colour from dark = 1 to light = last); the last
    column is the mean rank. Rows are sorted by mean rank; sanity baselines are
    italic and flagged methods carry † (both ranked, as in the table). A metric a
    model was not ranked on is a grey dash."""
    df = read_ranks(ranks_csv)
    metrics = rank_metrics(df)
    models = list(dict.fromkeys(df["model"]))
    n_panels = min(len(models), MAX_PANELS_PER_ROW)
    n_rows = -(-len(models) // n_panels)
    most = int(df.groupby("model").size().max())
    label_w = 0.15 + 0.065 * max(len(m) + 2 for m in df["method"])
    panel_w = CELL_W * (len(metrics) + 1)
    fig = new_figure(n_panels * (label_w + panel_w + 0.15) + 0.1, n_rows * (CELL_H * most + 0.8))
    axes = fig.subplots(n_rows, n_panels, squeeze=False)
    cmap = colormaps[CMAP].with_extremes(bad="#e6e6e6")
    columns = [*(f"rank_{c}" for c in metrics), "mean_rank"]
    for k, ax in enumerate(axes.flat):
        if k >= len(models):
            ax.set_visible(False)
            continue
        rows = df[df["model"] == models[k]].sort_values("mean_rank", kind="stable")
        values = rows[columns].to_numpy(dtype=float)
        n = len(rows)
        shade = 1.0 - (values - 1.0) / max(n - 1, 1)  # rank 1 -> 1 (dark), last -> 0
        ax.imshow(np.ma.masked_invalid(shade), cmap=cmap, vmin=0, vmax=1, aspect="auto")
        for i in range(n):
            for j in range(len(columns)):
                ax.text(
                    j,
                    i,
                    _format_rank(values[i, j]) if j < len(metrics) else f"{values[i, j]:.1f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    fontweight="bold" if j == len(metrics) else "normal",
                    color="white" if np.isfinite(shade[i, j]) and shade[i, j] > 0.55 else "black",
                )
        headers = [f"{metric(c).header}\n{metric(c).arrow}" for c in metrics] + ["mean\nrank"]
        ax.set_xticks(range(len(columns)), headers)
        ax.xaxis.tick_top()
        ax.tick_params(axis="x", length=0, pad=2)
        flagged = _flag(rows, "model_independent")
        methods = rows["method"].tolist()
        ax.set_yticks(range(n), [m + (" †" if flagged[i] else "") for i, m in enumerate(methods)])
        # ranks.csv's sanity_baseline follows the registered method (a variant's label)
        baseline = _flag(rows, "sanity_baseline") | rows["method"].isin(SANITY_BASELINES).to_numpy()
        for label, italic in zip(ax.get_yticklabels(), baseline, strict=True):
            if italic:
                label.set_fontstyle("italic")
        ax.tick_params(axis="y", length=0)
        ax.set_xticks(np.arange(-0.5, len(columns), 1), minor=True)
        ax.set_yticks(np.arange(-0.5, n, 1), minor=True)
        ax.grid(which="minor", color="white", linewidth=1.2)
        ax.tick_params(which="minor", length=0)
        ax.axvline(len(metrics) - 0.5, color="white", linewidth=4)  # the mean apart
        for spine in ax.spines.values():
            spine.set_visible(False)
        images = rows.get("n_images", pd.Series(dtype=float)).dropna()
        n_text = f"   (n = {int(images.min())})" if not images.empty else ""
        ax.set_title(f"{models[k]}{n_text}", fontsize=9.5, pad=4, loc="left")
    fig.supxlabel(_wrap(NOTE, fig.get_figwidth()), fontsize=7, color="#444444")
    return fig


def _wrap(text: str, width_in: float) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at 7 pt."""
    return "\n".join(textwrap.wrap(text, max(40, int(width_in * 72 / 3.9))))
