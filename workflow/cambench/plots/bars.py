"""Grouped bar charts of the summary: one panel per metric, models on the x axis, one
bar per method (in the method's colour), whiskers at the bootstrap confidence interval.
A model × method pair with degenerate maps (the summary's ``degenerate_maps`` > 0) is
drawn cross-hatched with a dark red edge and named in an extra legend entry."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cambench.best import registered_methods
from cambench.metric_table import METRICS as METRIC_TABLE
from cambench.plots.style import (
    BASELINE_METHODS,
    fit_xtick_labels,
    method_color,
    new_figure,
    save_figure,
    styled,
)
from cambench.plots.summary_heatmap import METRICS, read_summary

TITLES = {m.column: m.title for m in METRIC_TABLE}
DEGENERATE_STYLE = {"hatch": "xxxx", "edgecolor": "#8b0000", "linewidth": 0.8}


def _bar_style(method: str, registered: str | None = None) -> dict:
    """Colour, edge and hatch of ``method``'s bars (sanity baselines hatched: by the
    ``registered`` method a label runs, when it differs)."""
    baseline = (registered or method) in BASELINE_METHODS
    return {
        "facecolor": method_color(method),
        "edgecolor": "#444444" if baseline else "white",
        "hatch": "///" if baseline else None,
    }


def plot_metric_bars(summary_csv: str | os.PathLike, out_png: str | os.PathLike) -> None:
    """One panel per metric of ``summary.csv``: for each model (x axis) one bar per
    method, its height the mean over the images (percent) and its whisker the confidence
    interval (columns ``<metric>_ci_low`` / ``<metric>_ci_high``, when present). Methods
    keep their colour in every panel; sanity baselines are hatched. The title of each
    panel says whether lower or higher is better. The figure is
    :func:`metric_bars_figure`'s.
    """
    save_figure(metric_bars_figure(summary_csv), out_png)


@styled
def metric_bars_figure(summary_csv: str | os.PathLike) -> Figure:
    """The figure of :func:`plot_metric_bars`, not saved. Its legend has one swatch per
    method of the summary, in the method's colour and hatch, whichever models it ran on
    (a method that applies to some models only, e.g. ``castream_attention``, included).
    """
    df = read_summary(summary_csv)
    models = list(dict.fromkeys(df["model"]))
    methods = list(dict.fromkeys(df["method"]))
    ran = dict(zip(df["method"], registered_methods(df), strict=True))  # label -> method
    n_bars = len(models) * len(methods)
    n_cols = 4 if n_bars <= 12 and len(models) <= 2 else 2  # 3+ names: wider panels
    n_rows = -(-len(METRICS) // n_cols)
    fig = new_figure(7.2, 1.9 * n_rows + 0.25 + 0.18 * -(-len(methods) // 5))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    width = 0.8 / len(methods)
    x = np.arange(len(models))
    broken = _degenerate_pairs(df)
    for ax, (column, header, higher) in zip(axes.flat, METRICS, strict=False):
        table = df.set_index(["model", "method"])
        for k, method in enumerate(methods):
            keys = [(m, method) for m in models]
            mean = np.array([table[column].get(key, np.nan) for key in keys], dtype=float)
            positions = x - 0.4 + width * (k + 0.5)
            bars = ax.bar(
                positions,
                np.nan_to_num(mean),
                width=width * 0.92,
                linewidth=0.4,
                label=method,
                **_bar_style(method, ran[method]),
            )
            for bar, value, key in zip(bars, mean, keys, strict=True):
                if not np.isfinite(value):
                    bar.set_visible(False)
                elif key in broken:  # degenerate maps: a value that measures nothing
                    bar.set(**DEGENERATE_STYLE)
            low_col, high_col = f"{column}_ci_low", f"{column}_ci_high"
            if low_col in df.columns and high_col in df.columns:
                low = np.array([table[low_col].get(key, np.nan) for key in keys], dtype=float)
                high = np.array([table[high_col].get(key, np.nan) for key in keys], dtype=float)
                ok = np.isfinite(mean) & np.isfinite(low) & np.isfinite(high)
                if ok.any():
                    ax.errorbar(
                        positions[ok],
                        mean[ok],
                        yerr=[mean[ok] - low[ok], high[ok] - mean[ok]],
                        fmt="none",
                        ecolor="#222222",
                        elinewidth=0.8,
                        capsize=min(2.0, 40 * width / max(1, len(models))),
                    )
        ax.set_title(f"{TITLES.get(column, header)} ({'↑' if higher else '↓'})", fontsize=9)
        ax.set_xticks(x)
        ax.set_xticklabels(models, fontsize=8)
        ax.set_xlim(-0.5, len(models) - 0.5)
        ax.set_ylim(bottom=0)
        ax.grid(True, axis="y")
        ax.set_axisbelow(True)
    for ax in axes.flat[len(METRICS) :]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("percent")
    # One swatch per method, drawn here: a panel's own handles copy the first bar of each
    # method, which is hidden where the first model has no value for it.
    handles = [Patch(linewidth=0.4, label=m, **_bar_style(m, ran[m])) for m in methods]
    if broken:  # one more swatch, only when some pair has degenerate maps
        names = ", ".join(f"{m} × {k} ({n})" for (m, k), n in broken.items())
        label = f"degenerate maps, never bold nor ranked: {names}"
        handles.append(Patch(facecolor="white", label=label, **DEGENERATE_STYLE))
    n_text = f"n = {int(df['n_images'].min())}" + (
        f"–{int(df['n_images'].max())}" if df["n_images"].nunique() > 1 else ""
    )
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=-(-len(methods) // -(-len(methods) // 5)),  # rows of at most 5, balanced
        frameon=False,
        title=f"method (bars: mean; whiskers: confidence interval; {n_text} images)",
    )
    # many models in a narrow panel: their names would overprint
    fit_xtick_labels(list(axes.flat[: len(METRICS)]), models)
    return fig


def _degenerate_pairs(df: pd.DataFrame) -> dict[tuple[str, str], int]:
    """(model, method) -> number of degenerate maps, for the pairs that have any."""
    if "degenerate_maps" not in df.columns:
        return {}
    counts = df["degenerate_maps"].fillna(0).astype(int)
    return {
        (str(m), str(k)): int(n)
        for m, k, n in zip(df["model"], df["method"], counts, strict=True)
        if n > 0
    }
