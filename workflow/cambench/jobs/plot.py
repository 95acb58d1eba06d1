"""The plot job: draw one figure (PNG, and a PDF beside it) from cached results.

:data:`FIGURES` is the table of figures: the kind of figure, what its inputs are,
the function that draws it. The workflow's plot rules read the kinds from here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cambench import joblog, plots
from cambench.plots.ranks import plot_rank_heatmap


@dataclass(frozen=True)
class Figure:
    """One kind of figure: ``inputs`` says what files it reads; ``per_model``: one
    figure per model (else one for the experiment)."""

    inputs: str
    per_model: bool
    draw: Callable[..., None]


def _heatmap(inputs: Sequence[str], out: str, **_: object) -> None:
    plots.plot_summary_heatmap(inputs[0], out)


def _bars(inputs: Sequence[str], out: str, **_: object) -> None:
    plots.plot_metric_bars(inputs[0], out)


def _ranks(inputs: Sequence[str], out: str, **_: object) -> None:
    plot_rank_heatmap(inputs[0], out)


def _training(inputs: Sequence[str], out: str, **_: object) -> None:
    plots.plot_training(inputs, out)


def _randomization(inputs: Sequence[str], out: str, threshold: float, **_: object) -> None:
    plots.plot_randomization(inputs, out, threshold=threshold)


def _data_randomization(inputs: Sequence[str], out: str, **_: object) -> None:
    plots.plot_data_randomization(inputs, out)


def _distributions(inputs: Sequence[str], out: str, title: str, **_: object) -> None:
    plots.plot_distributions(inputs, out, title=title)


def _curves(inputs: Sequence[str], out: str, title: str, **_: object) -> None:
    plots.plot_curves(plots.group_by_method(inputs), out, title=title)


def _grid(
    inputs: Sequence[str], out: str, title: str, data: str, n_images: int, **_: object
) -> None:
    plots.plot_saliency_grid(
        data, plots.group_by_method(inputs), out, n_images=n_images, title=title
    )


FIGURES: dict[str, Figure] = {
    "summary_heatmap": Figure("summary.csv", False, _heatmap),
    "metric_bars": Figure("summary.csv", False, _bars),
    "rank_heatmap": Figure("ranks.csv", False, _ranks),
    "training": Figure("training histories (.json)", False, _training),
    "randomization": Figure("randomization CSVs", False, _randomization),
    "data_randomization": Figure(
        "data randomization example files (.npz)", False, _data_randomization
    ),
    "curves": Figure("curve files (.npz)", True, _curves),
    "distributions": Figure("per-image metric CSVs", True, _distributions),
    "saliency_grid": Figure("saliency files (.h5) and --data", True, _grid),
}


def run(
    figure: str,
    inputs: Sequence[str | os.PathLike],
    out_png: str | os.PathLike,
    title: str,
    data: str | None,
    n_images: int | None,
    threshold: float | None,
) -> None:
    """Draw ``figure`` (a key of :data:`FIGURES`) from ``inputs`` into ``out_png``."""
    if figure not in FIGURES:
        raise ValueError(f"unknown figure {figure!r}; valid: {', '.join(FIGURES)}")
    start = joblog.header("plot", {"figure": figure, "title": title}, [str(p) for p in inputs])
    FIGURES[figure].draw(
        [str(p) for p in inputs],
        str(out_png),
        title=title,
        data=data,
        n_images=n_images,
        threshold=threshold,
    )
    joblog.footer(start, [str(out_png), str(os.path.splitext(out_png)[0]) + ".pdf"])
