"""The summary table as a heatmap: methods × metrics, one panel per model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from cambench import best
from cambench.best import best_mask, rankable
from cambench.metric_table import METRICS as METRIC_TABLE
from cambench.plots.style import new_figure, save_figure, styled
from cambench.table_io import read_table

# (column in summary.csv, header in the figure, higher is better)
METRICS: tuple[tuple[str, str, bool], ...] = tuple(
    (m.column, m.header, not m.lower_is_better) for m in METRIC_TABLE if m.default
)
SUMMARY_COLUMNS: tuple[str, ...] = ("model", "method", "n_images", *(m[0] for m in METRICS))

CMAP = "YlGnBu"
CELL_W, CELL_H = 0.5, 0.3  # inches per heatmap cell
MAX_PANELS_PER_ROW = 3


def read_summary(summary_csv: str | os.PathLike) -> pd.DataFrame:
    """Read and check ``summary.csv``; errors name the file and the offending column."""
    path = Path(summary_csv)
    df = read_table(path, "summaries", required=SUMMARY_COLUMNS)
    if df.empty:
        raise ValueError(f"{path}: the summary has no rows")
    for column in ("n_images", *(m[0] for m in METRICS)):
        try:
            df[column] = pd.to_numeric(df[column], errors="raise").astype(float)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}: column {column!r} is not numeric ({err})") from err
    for column in ("model", "method"):
        if df[column].isna().any():
            raise ValueError(f"{path}: column {column!r} has empty values")
        df[column] = df[column].astype(str)
    duplicated = df.duplicated(["model", "method"], keep=False)
    if duplicated.any():
        pairs = sorted(
            set(zip(df.loc[duplicated, "model"], df.loc[duplicated, "method"], strict=True))
        )
        raise ValueError(f"{path}: duplicate rows for (model, method) {pairs}")
    return df


def goodness(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Map a column to [0, 1] with 1 = best of the column; NaN stays NaN, constant → 0.5."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    out = np.full(values.shape, np.nan)
    if not finite.any():
        return out
    lo, hi = values[finite].min(), values[finite].max()
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        out[finite] = 0.5
        return out
    scaled = (values[finite] - lo) / (hi - lo)
    out[finite] = scaled if higher_is_better else 1.0 - scaled
    return out


def _format_value(v: float) -> str:
    text = f"{v:.1f}"
    return "0.0" if text == "-0.0" else text


def _n_images_label(n: pd.Series) -> str:
    n = n.dropna()
    if n.empty:
        return ""
    lo, hi = int(n.min()), int(n.max())
    return f"n = {lo}" if lo == hi else f"n = {lo}–{hi}"


def _row_labels(rows: pd.DataFrame, methods: list[str]) -> list[str]:
    """Method names, marked † when the randomization check flags them."""
    marked = best.flagged(rows)
    return [method + (" †" if marked[i] else "") for i, method in enumerate(methods)]


DEGENERATE_EDGE = "#8b0000"


def _mark_degenerate(ax: Axes, rows: pd.DataFrame, n_metrics: int) -> int:
    """Cross-hatch, with a dark red edge, the rows of this panel's model whose maps are
    degenerate (all zero or constant); returns how many rows are marked."""
    broken = rows.get("degenerate_maps", pd.Series(0, index=rows.index)).fillna(0).to_numpy()
    for i in np.flatnonzero(broken > 0):
        ax.add_patch(
            Rectangle(
                (-0.5, i - 0.5),
                n_metrics,
                1,
                fill=False,
                hatch="xxx",
                edgecolor=DEGENERATE_EDGE,
                linewidth=1.0,
            )
        )
        ax.text(
            n_metrics - 0.5,
            i,
            f" ⚠ {int(broken[i])}",
            ha="left",
            va="center",
            fontsize=7,
            color=DEGENERATE_EDGE,
            clip_on=False,
        )
    return int((broken > 0).sum())


@styled
def plot_summary_heatmap(summary_csv: str | os.PathLike, out_png: str | os.PathLike) -> None:
    """Draw ``summary.csv`` as a methods × metrics heatmap, one panel per model.

    Every cell prints its value (percent). The colour shows how good the value is within
    its column of its panel (the best method of the model is darkest), respecting that
    lower is better for AD and deletion; headers carry ↓ / ↑. Each panel's best value per
    column is bold among the methods that may be (:func:`cambench.best.rankable`; none
    when all tie). Missing values are grey with a dash; flagged methods carry †, and
    the rows of a model × method pair with degenerate maps are cross-hatched in that
    model's panel, with ⚠ and their count, and explained in a note under the figure.
    """
    df = read_summary(summary_csv)
    models = list(dict.fromkeys(df["model"]))
    methods = list(dict.fromkeys(df["method"]))  # union, in order of first appearance
    n_metrics, n_methods = len(METRICS), len(methods)

    n_cols = min(len(models), MAX_PANELS_PER_ROW)
    n_rows = -(-len(models) // n_cols)
    label_w = 0.12 + 0.062 * max(len(m) for m in methods)
    panel_w, panel_h = CELL_W * n_metrics, CELL_H * n_methods + 0.75
    fig = new_figure(label_w + n_cols * (panel_w + 0.15) + 0.9, n_rows * panel_h + 0.2)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)

    cmap = colormaps[CMAP].with_extremes(bad="#e6e6e6")
    image = None
    n_degenerate = 0
    for k, ax in enumerate(axes.flat):
        if k >= len(models):
            ax.set_visible(False)
            continue
        model = models[k]
        table = df[df["model"] == model].set_index("method").reindex(methods)
        values = table[[m[0] for m in METRICS]].to_numpy(dtype=float)
        colour = np.column_stack(
            [goodness(values[:, j], better) for j, (_, _, better) in enumerate(METRICS)]
        )
        image = ax.imshow(
            np.ma.masked_invalid(colour), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto"
        )
        rows = table.reset_index()
        present = rows["model"].notna().to_numpy()
        ok = np.zeros(n_methods, dtype=bool)
        ok[present] = rankable(rows[present])  # the tables' rule: never a sanity baseline,
        for j in range(n_metrics):  # a flagged method, degenerate maps, nor an all-tie column
            column = colour[:, j]
            bold = np.zeros(n_methods, dtype=bool)
            bold[ok] = best_mask(values[ok, j], lower_is_better=not METRICS[j][2])
            for i in range(n_methods):
                v, g = values[i, j], column[i]
                if not np.isfinite(v):
                    ax.text(j, i, "–", ha="center", va="center", fontsize=8, color="#777777")
                    continue
                is_best = bool(bold[i])
                ax.text(
                    j,
                    i,
                    _format_value(v),
                    ha="center",
                    va="center",
                    fontsize=8,
                    fontweight="bold" if is_best else "normal",
                    color="white" if g > 0.55 else "black",
                )
        ax.set_xticks(range(n_metrics))
        ax.set_xticklabels([f"{header}\n{'↑' if better else '↓'}" for _, header, better in METRICS])
        ax.xaxis.tick_top()
        ax.tick_params(axis="x", length=0, pad=2)
        ax.set_yticks(range(n_methods))
        if k % n_cols == 0:
            ax.set_yticklabels(_row_labels(rows, methods))
        else:
            ax.set_yticklabels([])
        ax.tick_params(axis="y", length=0)
        # thin white grid between cells
        ax.set_xticks(np.arange(-0.5, n_metrics, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, n_methods, 1), minor=True)
        ax.grid(which="minor", color="white", linewidth=1.2)
        ax.tick_params(which="minor", length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_title(
            f"{model}   ({_n_images_label(table['n_images'])})", fontsize=9.5, pad=4, loc="left"
        )
        n_degenerate += _mark_degenerate(ax, rows, n_metrics)

    bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=min(1.0, 2.2 / (n_rows * panel_h)))
    bar.set_ticks([0.0, 1.0], labels=["worst", "best"])
    bar.set_label("colour: within each column", fontsize=8)
    bar.ax.tick_params(labelsize=8, length=0)
    bar.outline.set_visible(False)
    if n_degenerate:  # only then: the default figure is unchanged
        fig.supxlabel(
            "cross-hatched, ⚠ n: n degenerate maps (all zero or constant); never bold",
            fontsize=7,
            color=DEGENERATE_EDGE,
        )
    save_figure(fig, out_png)
