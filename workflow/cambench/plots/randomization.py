"""The model-randomization sanity check: correlation with the trained model's maps as
the layers are re-initialized from the output down, one line per method."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cambench.plots.style import (
    method_color,
    method_linestyle,
    new_figure,
    save_figure,
    styled,
)
from cambench.table_io import read_tables

RANDOMIZATION_COLUMNS = ("model", "method", "step", "randomized", "spearman")
MAX_PANELS_PER_ROW = 3


def read_randomization_csvs(csv_files: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate randomization CSVs; errors name the file and the missing column."""
    df = read_tables(csv_files, "randomization results", required=RANDOMIZATION_COLUMNS)
    df["model"] = df["model"].astype(str)
    df["method"] = df["method"].astype(str)
    return df


@styled
def plot_randomization(
    csv_files: Sequence[str | os.PathLike], out_png: str | os.PathLike, threshold: float = 0.99
) -> None:
    """One panel per model: the mean Spearman rank correlation between each method's
    maps on the trained model and on the model randomized up to the block on the x axis
    (cumulatively, from the output down), with its confidence band when present. A
    faithful method falls towards 0; a line that stays above the dotted ``threshold``
    marks a model-independent method (marked † in the legend).
    """
    df = read_randomization_csvs(csv_files)
    models = list(dict.fromkeys(df["model"]))
    methods = list(dict.fromkeys(df["method"]))
    n_cols = min(len(models), MAX_PANELS_PER_ROW)
    n_rows = -(-len(models) // n_cols)
    fig = new_figure(max(3.6, 3.2 * n_cols), 2.6 * n_rows + 0.2 + 0.18 * -(-len(methods) // 4))
    axes = fig.subplots(n_rows, n_cols, squeeze=False, sharey=True)
    # Spearman ρ lies in [-1, 1]: show every value (and band), with 0 always in view
    lowest = df[[c for c in ("spearman", "ci_low") if c in df.columns]].min().min()
    bottom = min(-0.25, float(np.floor(lowest * 10) / 10) - 0.05) if np.isfinite(lowest) else -0.25
    lines: dict[str, object] = {}
    flagged: set[str] = set()
    for ax, model in zip(axes.flat, models, strict=False):
        block = df[df["model"] == model]
        labels: list[str] = []
        for method in methods:
            rows = block[block["method"] == method].sort_values("step")
            if rows.empty:
                continue
            steps = rows["step"].to_numpy(dtype=int)
            if len(rows["randomized"]) > len(labels):
                labels = [str(v) for v in rows["randomized"]]
            y = rows["spearman"].to_numpy(dtype=float)
            colour = method_color(method)
            (line,) = ax.plot(
                steps,
                y,
                color=colour,
                linestyle=method_linestyle(method),
                marker="o",
                markersize=3,
            )
            lines.setdefault(method, line)
            if {"ci_low", "ci_high"} <= set(rows.columns):
                low = rows["ci_low"].to_numpy(dtype=float)
                high = rows["ci_high"].to_numpy(dtype=float)
                ok = np.isfinite(low) & np.isfinite(high)
                ax.fill_between(steps[ok], low[ok], high[ok], color=colour, alpha=0.15, lw=0)
            if "model_independent" in rows.columns and bool(rows["model_independent"].iloc[0]):
                flagged.add(method)
        ax.axhline(threshold, color="#555555", linestyle=":", linewidth=1.0)
        ax.axhline(0.0, color="#999999", linewidth=0.6)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(
            ["trained" if s == "none" else f"→ {s}" for s in labels],
            rotation=40,
            ha="right",
            rotation_mode="anchor",
        )
        ax.set_title(model)
        ax.set_xlabel("randomized down to")
        ax.set_ylim(bottom, 1.05)
        ax.grid(True)
    for ax in axes.flat[len(models) :]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("Spearman ρ with trained maps")
    fig.legend(
        list(lines.values()),
        [f"{m} †" if m in flagged else m for m in lines],
        loc="outside lower center",
        ncol=min(len(lines), 4),
        frameon=False,
        title=f"method († stays ≥ {threshold:g}: model-independent; dotted: threshold)",
    )
    save_figure(fig, out_png)
