"""Which rows may be marked best, and which values are: the one rule every table and
figure applies (no torch, no matplotlib: the summary and the plots both read it).

A row may be bold only if its method explains the model: never a sanity baseline
(``fakecam``, ``random``, and the ground-truth reference ``mask_oracle``), never a
method a randomization check flags (``model_independent`` from the parameter check,
``data_independent`` from the data check), never a model × method with degenerate maps (all zero or
constant; ``degenerate_maps`` > 0). Within a column the best value is bold — all of
the ties at the displayed precision — unless every value ties, when none is.

>>> best_mask([1.0, 2.0, 2.0], lower_is_better=False).tolist()
[False, True, True]
>>> best_mask([3.0, 3.0, 3.0], lower_is_better=True).tolist()  # all tie: none is best
[False, False, False]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

SANITY_BASELINES = ("fakecam", "random", "mask_oracle")
# References the summary's text names only when they were run (the others it always
# names, as it did before they existed).
REFERENCE_BASELINES = ("mask_oracle",)


def best_mask(values: Sequence[float], lower_is_better: bool, digits: int = 1) -> np.ndarray:
    """Which entries are the best of their column (ties at the displayed precision all
    count); none when fewer than two values are finite or when every finite value ties."""
    values = np.round(np.asarray(values, dtype=float), digits)
    finite = np.isfinite(values)
    if finite.sum() < 2 or np.unique(values[finite]).size == 1:
        return np.zeros(values.shape, dtype=bool)
    best = np.nanmin(values) if lower_is_better else np.nanmax(values)
    return finite & (values == best)


def flagged(summary: pd.DataFrame) -> np.ndarray:
    """Rows a randomization check flags (†): model-independent (parameter check) or
    data-independent (data check)."""
    out = np.zeros(len(summary), dtype=bool)
    for name in ("model_independent", "data_independent"):
        column = summary.get(name, pd.Series(False, index=summary.index))
        out |= column.astype("boolean").fillna(False).to_numpy(dtype=bool)
    return out


def degenerate(summary: pd.DataFrame) -> np.ndarray:
    """Rows with degenerate maps (the summary's ``degenerate_maps`` column, if any)."""
    column = summary.get("degenerate_maps", pd.Series(0, index=summary.index))
    return column.fillna(0).to_numpy(dtype=float) > 0


def registered_methods(summary: pd.DataFrame) -> pd.Series:
    """The method each row ran: its ``registered_method`` where a ``methods:`` entry's
    label differs from it (a variant, ``random_2: {method: random}``), else ``method``."""
    method = summary["method"].astype(str)
    if "registered_method" not in summary.columns:
        return method
    return summary["registered_method"].where(summary["registered_method"].notna(), method)


def rankable(summary: pd.DataFrame) -> np.ndarray:
    """Rows that may be marked best or ranked (see the module's docstring)."""
    baseline = registered_methods(summary).isin(SANITY_BASELINES).to_numpy()
    return ~flagged(summary) & ~baseline & ~degenerate(summary)
