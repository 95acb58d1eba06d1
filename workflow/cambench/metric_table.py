"""The metric table: every metric cambench reports, declared once.

The metrics job writes one per-image column per entry, the summary aggregates and
ranks them, the comparison tests them, and every figure reads its titles and
directions from here. Adding a metric is one entry here plus the function that
computes it (called by :mod:`cambench.jobs.metrics`).

Units: the public Python API (:mod:`cambench.metrics`) returns fractions in [0, 1];
the tables (per-image CSVs, ``summary.csv``, ``comparison.csv``) hold percent. The
``scale`` of an entry is the one place where that conversion happens.

This module imports neither torch nor matplotlib: the plots and the summary read it.
"""

from __future__ import annotations

from dataclasses import dataclass

LOWER = "lower"
HIGHER = "higher"


@dataclass(frozen=True)
class Metric:
    """One reported metric.

    ``column``: its name in the per-image CSV and the summary; ``header``: the short
    table header; ``title``: the figure title; ``unit``: of the table values;
    ``direction``: ``lower`` or ``higher`` is better; ``aggregate``: how per-image
    values combine (``mean``, NaN skipped: an image without an object mask has no
    localization score); ``binary``: per-image values are 0 or 100 only (a box plot
    of them says nothing); ``scale``: API value × scale = table value;
    ``may_be_undefined``: an image may legitimately have no value (NaN: localization
    of an image without an object mask); any other missing value is an error.
    """

    column: str
    header: str
    title: str
    direction: str
    unit: str = "%"
    aggregate: str = "mean"
    binary: bool = False
    scale: float = 100.0
    may_be_undefined: bool = False

    @property
    def lower_is_better(self) -> bool:
        return self.direction == LOWER

    @property
    def arrow(self) -> str:
        return "↓" if self.lower_is_better else "↑"


METRICS: tuple[Metric, ...] = (
    Metric("AD", "AD", "Average drop", LOWER),
    Metric("AI", "AI", "Average increase", HIGHER, binary=True),
    Metric("AG", "AG", "Average gain", HIGHER),
    Metric("insertion", "Ins.", "Insertion AUC", HIGHER),
    Metric("deletion", "Del.", "Deletion AUC", LOWER),
    Metric("pointing_game", "PG", "Pointing game", HIGHER, binary=True, may_be_undefined=True),
    Metric("energy_pointing_game", "EPG", "Energy pointing game", HIGHER, may_be_undefined=True),
    Metric("iou", "IoU", "IoU (mean threshold)", HIGHER, may_be_undefined=True),
)
BY_COLUMN: dict[str, Metric] = {m.column: m for m in METRICS}
COLUMNS: tuple[str, ...] = tuple(m.column for m in METRICS)

# The explanation time per image, a summary column with a direction but no metric.
TIME = Metric("ms_per_image", "T (ms)", "Time per image", LOWER, unit="ms", scale=1000.0)


def metric(column: str) -> Metric:
    """The entry of ``column`` (a metric or ``ms_per_image``); ValueError otherwise."""
    if column == TIME.column:
        return TIME
    try:
        return BY_COLUMN[column]
    except KeyError:
        raise ValueError(f"unknown metric {column!r}; valid: {', '.join(COLUMNS)}") from None
