"""Per-image distributions of the metrics: one box per method, one panel per metric."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cambench.metric_table import METRICS
from cambench.plots.style import fit_titles, method_color, new_figure, save_figure, styled
from cambench.table_io import read_tables

# (per-image column, title, higher is better, y-axis label): the metrics whose
# per-image values spread (AI and the pointing game are 0 or 100 per image: a box says
# nothing). The titles are the metrics' own; "per image" is said once, in the figure's
# title; the y label is the metric's unit ("" for a unitless one, e.g. a correlation).
DISTRIBUTION_METRICS: tuple[tuple[str, str, bool, str], ...] = tuple(
    (m.column, m.title, not m.lower_is_better, "percent" if m.unit == "%" else m.unit)
    for m in METRICS
    if not m.binary
)


def read_per_image(csv_files: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate per-image metric CSVs; errors name the file."""
    return read_tables(csv_files, "per-image metrics", required=("method",))


@styled
def plot_distributions(
    csv_files: Sequence[str | os.PathLike], out_png: str | os.PathLike, title: str = ""
) -> None:
    """Box plots of the per-image values of AD, AG, insertion, deletion, energy
    pointing game, IoU and the other non-binary metrics present (each in its unit),
    one box per method in its colour.

    Boxes span the quartiles with the median as a line; whiskers reach the furthest
    value within 1.5 interquartile ranges; the white diamond is the mean (the number
    in the summary table). Metrics a file lacks are left out. A panel title wider than
    its panel is broken into two lines, so neighbouring titles never overprint.
    """
    df = read_per_image(csv_files)
    methods = list(dict.fromkeys(df["method"].astype(str)))
    panels = [m for m in DISTRIBUTION_METRICS if m[0] in df.columns]
    if not panels:
        raise ValueError(
            f"the per-image files have none of the columns {[m[0] for m in DISTRIBUTION_METRICS]}"
        )
    n_cols = 3 if len(panels) > 4 else 2
    n_rows = -(-len(panels) // n_cols)
    fig = new_figure(7.2, 2.1 * n_rows + 0.3)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for ax, (column, name, higher, _) in zip(axes.flat, panels, strict=False):
        data, positions, colours = [], [], []
        for k, method in enumerate(methods):
            values = pd.to_numeric(df.loc[df["method"] == method, column], errors="coerce")
            values = values.to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            if values.size:
                data.append(values)
                positions.append(k)
                colours.append(method_color(method))
        if data:
            parts = ax.boxplot(
                data,
                positions=positions,
                widths=0.6,
                patch_artist=True,
                showmeans=True,
                meanprops={
                    "marker": "D",
                    "markerfacecolor": "white",
                    "markeredgecolor": "black",
                    "markersize": 3.5,
                },
                medianprops={"color": "black", "linewidth": 1.0},
                flierprops={"marker": ".", "markersize": 2.5, "alpha": 0.5},
            )
            for patch, colour in zip(parts["boxes"], colours, strict=True):
                patch.set_facecolor(colour)
                patch.set_alpha(0.75)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_xlim(-0.6, len(methods) - 0.4)
        ax.set_title(f"{name} ({'↑' if higher else '↓'})")
        ax.grid(True, axis="y")
        ax.set_axisbelow(True)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    units = [m[3] for m in panels]
    for r, row in enumerate(axes):  # a row of one unit says it once, a mixed row per panel
        row_units = units[r * n_cols : (r + 1) * n_cols]
        if len(set(row_units)) == 1:
            row[0].set_ylabel(row_units[0])
        else:
            for ax, unit in zip(row, row_units, strict=False):
                ax.set_ylabel(unit)
    n = df.groupby("method").size()
    n_text = f"n = {n.min()}" + (f"–{n.max()}" if n.min() != n.max() else "") + " images"
    fig.suptitle(
        f"{title}: per-image scores   ({n_text})" if title else f"per-image scores ({n_text})"
    )
    fit_titles([ax for ax in axes.flat if ax.get_visible()])  # a long title: two lines
    save_figure(fig, out_png)
