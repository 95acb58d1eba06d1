"""Figures of a cambench run: summary heatmap, metric bar charts, per-image
distributions, insertion/deletion curves, saliency grid, training curves and the
randomization sanity check. Every figure is written as PNG and PDF. Pure
numpy/pandas/h5py/matplotlib (Agg); never imports torch."""

from cambench.checksum import verify as verify_checksum
from cambench.plots.bars import plot_metric_bars
from cambench.plots.curves import plot_curves
from cambench.plots.datarand import plot_data_randomization
from cambench.plots.distributions import plot_distributions
from cambench.plots.randomization import plot_randomization
from cambench.plots.saliency_grid import plot_saliency_grid
from cambench.plots.style import METHOD_COLORS, method_color
from cambench.plots.summary_heatmap import plot_summary_heatmap, read_summary
from cambench.plots.training import plot_training

__all__ = [
    "METHOD_COLORS",
    "method_color",
    "plot_curves",
    "plot_data_randomization",
    "plot_distributions",
    "plot_metric_bars",
    "plot_randomization",
    "plot_saliency_grid",
    "plot_summary_heatmap",
    "plot_training",
    "group_by_method",
    "read_summary",
]


def group_by_method(paths: list[str]) -> dict[str, list[str]]:
    """Curve (.npz) or saliency (.h5) files grouped by the method they hold, in order."""
    import h5py
    import numpy as np

    groups: dict[str, list[str]] = {}
    for path in paths:
        if str(path).endswith(".npz"):
            with np.load(path) as npz:
                method = str(npz["method"])
        else:
            verify_checksum(path)
            with h5py.File(path, "r") as f:
                method = str(f.attrs["method"])
        groups.setdefault(method, []).append(path)
    return groups
