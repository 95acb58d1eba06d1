"""The ROAR/KAR curve: retrained test accuracy against the fraction of pixels removed
(ROAR) or kept (KAR), one line per method, one panel per model × mode."""

from __future__ import annotations

import os

import pandas as pd

from cambench.plots.style import method_color, method_linestyle, new_figure, save_figure, styled

MAX_PANELS_PER_ROW = 4


@styled
def plot_roar(rows: pd.DataFrame, out_png: str | os.PathLike) -> None:
    """``rows``: ``roar.csv`` (model, mode, method, fraction, seed, test_acc,
    unmodified_acc). Each method's mean accuracy over the seeds, its band the seeds'
    minimum to maximum (every seed is a point), ``random`` dashed, and the unmodified
    model's accuracy as a dotted line: the references a method is read against."""
    panels = list(dict.fromkeys(zip(rows["model"], rows["mode"], strict=True)))
    methods = list(dict.fromkeys(rows["method"]))
    n_cols = min(len(panels), MAX_PANELS_PER_ROW)
    n_rows = -(-len(panels) // n_cols)
    fig = new_figure(max(3.6, 3.2 * n_cols), 2.7 * n_rows + 0.2 + 0.18 * -(-len(methods) // 4))
    axes = fig.subplots(n_rows, n_cols, squeeze=False, sharey=True)
    handles: dict[str, object] = {}
    for ax, (model, mode) in zip(axes.flat, panels, strict=False):
        block = rows[(rows["model"] == model) & (rows["mode"] == mode)]
        for method in methods:
            data = block[block["method"] == method]
            if data.empty:
                continue
            stats = data.groupby("fraction")["test_acc"].agg(["mean", "min", "max"]).sort_index()
            x = stats.index.to_numpy(float)
            color = method_color(method)
            (line,) = ax.plot(
                x,
                100 * stats["mean"],
                marker="o",
                markersize=3,
                color=color,
                linestyle=method_linestyle(method),
                label=method,
            )
            if data["seed"].nunique() > 1:
                ax.fill_between(x, 100 * stats["min"], 100 * stats["max"], color=color, alpha=0.15)
                ax.scatter(data["fraction"], 100 * data["test_acc"], s=5, color=color, alpha=0.5)
            handles[method] = line
        unmodified = float(block["unmodified_acc"].iloc[0])
        ref = ax.axhline(100 * unmodified, color="black", linestyle=":", linewidth=1)
        handles["unmodified model"] = ref
        ax.set_title(f"{model}: {mode.upper()}")
        ax.set_xlabel("fraction kept" if mode == "kar" else "fraction removed")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 100)
    for ax in axes[:, 0]:
        ax.set_ylabel("retrained test accuracy (%)")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="outside lower center",
        ncol=min(4, len(handles)),
        frameon=False,
    )
    save_figure(fig, out_png)
