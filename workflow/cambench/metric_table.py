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
from typing import Any

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
    ``family``: ``faithfulness``, ``localization`` or ``complexity`` (a name
    ``metrics.include`` accepts); ``group``: the computation that yields the column
    (its parameters are :data:`PARAMS` ``[group]``); ``default``: in the default run.
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
    family: str = "faithfulness"
    group: str = ""
    default: bool = True

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
    Metric(
        "pointing_game",
        "PG",
        "Pointing game",
        HIGHER,
        binary=True,
        may_be_undefined=True,
        family="localization",
    ),
    Metric(
        "energy_pointing_game",
        "EPG",
        "Energy pointing game",
        HIGHER,
        may_be_undefined=True,
        family="localization",
    ),
    Metric(
        "iou",
        "IoU",
        "IoU (mean threshold)",
        HIGHER,
        may_be_undefined=True,
        family="localization",
    ),
    # not in the default run: chosen by metrics.include (cambench.metrics.road, ...)
    Metric("road_morf", "ROAD-M", "ROAD, most relevant first", LOWER, group="road", default=False),
    Metric(
        "road_lerf", "ROAD-L", "ROAD, least relevant first", HIGHER, group="road", default=False
    ),
    Metric("road", "ROAD", "ROAD (LeRF - MoRF)", HIGHER, group="road", default=False),
    Metric(
        "faithfulness_correlation",
        "FCor",
        "Faithfulness correlation",
        HIGHER,
        unit="r",
        scale=1.0,
        group="faithfulness_correlation",
        default=False,
    ),
    Metric(
        "monotonicity_correlation",
        "MCor",
        "Monotonicity correlation",
        HIGHER,
        unit="rho",
        scale=1.0,
        group="monotonicity_correlation",
        default=False,
    ),
    Metric("irof", "IROF", "IROF (area over the curve)", HIGHER, group="irof", default=False),
    Metric(
        "sparseness",
        "Gini",
        "Sparseness (Gini index)",
        HIGHER,
        unit="",
        scale=1.0,
        family="complexity",
        group="sparseness",
        default=False,
    ),
    Metric(
        "complexity",
        "Cplx",
        "Complexity (entropy)",
        LOWER,
        unit="nats",
        scale=1.0,
        family="complexity",
        group="complexity",
        default=False,
    ),
    Metric(
        "effective_complexity",
        "EffC",
        "Effective complexity",
        LOWER,
        family="complexity",
        group="effective_complexity",
        default=False,
    ),
    # robustness: re-run the method on perturbed inputs (cambench.metrics.robustness)
    Metric(
        "max_sensitivity",
        "MaxS",
        "Max-sensitivity",
        LOWER,
        unit="",
        scale=1.0,
        may_be_undefined=True,
        family="robustness",
        group="sensitivity",
        default=False,
    ),
    Metric(
        "avg_sensitivity",
        "AvgS",
        "Avg-sensitivity",
        LOWER,
        unit="",
        scale=1.0,
        may_be_undefined=True,
        family="robustness",
        group="sensitivity",
        default=False,
    ),
    Metric(
        "relative_input_stability",
        "RIS",
        "Relative input stability",
        LOWER,
        unit="",
        scale=1.0,
        may_be_undefined=True,
        family="robustness",
        group="relative_input_stability",
        default=False,
    ),
)

#: Quantus 0.6 metric classes that give one score per image, and their direction:
#: ``metrics.quantus: {<Class>: {params}}`` adds the column ``quantus_<Class>``
#: (cambench.metrics.quantus_adapter). The localisation ones read the object masks.
QUANTUS_METRICS: dict[str, str] = {
    "FaithfulnessCorrelation": HIGHER,
    "FaithfulnessEstimate": HIGHER,
    "Monotonicity": HIGHER,
    "MonotonicityCorrelation": HIGHER,
    "IROF": HIGHER,
    "Infidelity": LOWER,
    "Sufficiency": HIGHER,
    "LocalLipschitzEstimate": LOWER,
    "MaxSensitivity": LOWER,
    "AvgSensitivity": LOWER,
    "Consistency": HIGHER,
    "RelativeInputStability": LOWER,
    "RelativeOutputStability": LOWER,
    "RelativeRepresentationStability": LOWER,
    "PointingGame": HIGHER,
    "TopKIntersection": HIGHER,
    "RelevanceMassAccuracy": HIGHER,
    "RelevanceRankAccuracy": HIGHER,
    "AttributionLocalisation": HIGHER,
    "AUC": HIGHER,
    "Sparseness": HIGHER,
    "Complexity": LOWER,
    "EffectiveComplexity": LOWER,
    "Completeness": HIGHER,
    "NonSensitivity": LOWER,
}
#: The Quantus classes that score against the object masks (``s_batch``).
QUANTUS_READS_MASKS = (
    "PointingGame",
    "TopKIntersection",
    "RelevanceMassAccuracy",
    "RelevanceRankAccuracy",
    "AttributionLocalisation",
    "AUC",
)
#: Quantus classes that exist but give no single score per image, and why.
QUANTUS_NOT_PER_IMAGE: dict[str, str] = {
    **dict.fromkeys(
        ("PixelFlipping", "RegionPerturbation", "Selectivity", "SensitivityN", "ROAD"),
        "gives a curve per image, not one score (cambench's own road, irof and "
        "insertion/deletion are in metrics.include)",
    ),
    **dict.fromkeys(
        ("MPRT", "SmoothMPRT", "EfficientMPRT", "RandomLogit"),
        "a randomisation test re-runs the method on other models or classes: use the "
        "sanity stage (sanity.randomization, sanity.smooth_mprt, sanity.efficient_mprt, "
        "sanity.random_logit)",
    ),
    "Continuity": "gives a mapping of values per image, not one score",
    "Focus": "needs mosaics of images of several classes, which cambench does not build",
    "InputInvariance": "needs a model with a shifted input layer, which cambench does not build",
}
METRICS = METRICS + tuple(
    Metric(
        f"quantus_{name}",
        name[:8],
        f"{name} (Quantus)",
        direction,
        unit="",
        scale=1.0,
        may_be_undefined=True,
        family="quantus",
        group="quantus",
        default=False,
    )
    for name, direction in QUANTUS_METRICS.items()
)

#: The parameters (and their defaults) of each added metric's computation, as
#: ``metrics.params.<group>`` takes them; recorded with every result.
PARAMS: dict[str, dict[str, Any]] = {
    "road": {
        "percentages": [10, 20, 30, 40, 50, 60, 70, 80, 90],
        "noise": 0.01,
        "weights": [1 / 6, 1 / 12],
        "score": "accuracy",
        "seed": 0,
    },
    "faithfulness_correlation": {
        "subset_size": 224,
        "n_subsets": 100,
        "baseline": "black",
        "output": "probability",
        "seed": 0,
    },
    "monotonicity_correlation": {
        "pixels_per_step": 16,
        "n_samples": 10,
        "low": 0.0,
        "high": 1.0,
        "eps": 1e-5,
        "output": "probability",
        "seed": 0,
    },
    "irof": {"cells": 8, "output": "probability"},
    "sparseness": {},
    "complexity": {},
    "effective_complexity": {"eps": 1e-5},
    "sensitivity": {"radius": 0.02, "n_samples": 10, "seed": 0, "relative": False},
    "relative_input_stability": {"radius": 0.02, "n_samples": 10, "seed": 0, "eps": 1e-6},
}
#: Groups that re-run the saliency method (the metrics job explains perturbed inputs).
RERUNS_METHOD = ("sensitivity", "relative_input_stability")
FAMILIES = ("faithfulness", "localization", "complexity", "robustness")
DEFAULT_COLUMNS: tuple[str, ...] = tuple(m.column for m in METRICS if m.default)


def resolve_include(include: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The columns ``metrics.include`` selects (metric names, families, ``default``),
    in table order, always with the default set (every summary, figure and comparison
    has those); ValueError naming the key and the unknown entry."""
    chosen: set[str] = set(DEFAULT_COLUMNS)
    for entry in include:
        if entry == "default":
            chosen.update(DEFAULT_COLUMNS)
        elif entry in FAMILIES:
            chosen.update(m.column for m in METRICS if m.family == entry)
        elif entry in PARAMS:  # a group: all its columns (road: morf, lerf, gap)
            chosen.update(m.column for m in METRICS if m.group == entry)
        elif any(m.column == entry and m.family != "quantus" for m in METRICS):
            chosen.add(entry)
        elif entry.startswith("quantus"):
            raise ValueError(
                f"config key 'metrics.include': {entry!r}: Quantus metrics are chosen by "
                "metrics.quantus: {<Class>: {params}}"
            )
        else:
            valid = ["default", *FAMILIES, *(m.column for m in METRICS if m.family != "quantus")]
            raise ValueError(
                f"config key 'metrics.include': unknown metric {entry!r}; valid: "
                f"{', '.join(dict.fromkeys(valid))}"
            )
    return tuple(m.column for m in METRICS if m.column in chosen)


def _fits(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, list):
        return isinstance(value, list) and all(isinstance(v, (int, float)) for v in value)
    return isinstance(value, type(default))


def resolve_params(
    params: dict[str, dict[str, Any]] | None,
    columns: tuple[str, ...],
    image_size: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Full parameters of every computation the chosen ``columns`` need (defaults
    filled); ValueError naming ``metrics.params.<group>[.<key>]`` for an unknown group,
    an unknown key, a value of another type than the default's or out of its range
    (:func:`check_values`)."""
    for group, given in (params or {}).items():
        if group not in PARAMS:
            raise ValueError(
                f"config key 'metrics.params.{group}': no metric takes parameters by that "
                f"name; valid: {', '.join(g for g in PARAMS if PARAMS[g])}"
            )
        for key, value in (given or {}).items():
            if key not in PARAMS[group]:
                raise ValueError(
                    f"config key 'metrics.params.{group}.{key}': {group} takes no parameter "
                    f"{key!r}; valid: {', '.join(PARAMS[group]) or 'none'}"
                )
            if not _fits(value, PARAMS[group][key]):
                raise ValueError(
                    f"config key 'metrics.params.{group}.{key}': expected "
                    f"{type(PARAMS[group][key]).__name__} like the default "
                    f"{PARAMS[group][key]!r}, got {value!r}"
                )
    groups = dict.fromkeys(BY_COLUMN[c].group for c in columns if BY_COLUMN[c].group in PARAMS)
    resolved = {g: {**PARAMS[g], **((params or {}).get(g) or {})} for g in groups}
    for group in {*groups, *(params or {})}:
        check_values(group, {**PARAMS[group], **((params or {}).get(group) or {})}, image_size)
    return resolved


def check_values(group: str, values: dict[str, Any], image_size: int | None = None) -> None:
    """ValueError naming ``metrics.params.<group>.<key>`` for a value outside its
    metric's range (``image_size``: the dataset's, for the limits in pixels), so that
    a bad value fails at config time, not in the metrics job."""

    def fail(key: str, expected: str) -> None:
        raise ValueError(
            f"config key 'metrics.params.{group}.{key}': {expected}, got {values[key]!r}"
        )

    def choice(key: str, valid: tuple[str, ...]) -> None:
        if values[key] not in valid:
            fail(key, f"must be one of {', '.join(valid)}")

    def at_least(key: str, low: float) -> None:
        if not values[key] >= low:
            fail(key, f"must be at least {low}")

    pixels = image_size * image_size if image_size else None
    if "seed" in values:
        at_least("seed", 0)
    if group == "road":
        percentages = values["percentages"]
        if not percentages or any(not 0 < p < 100 for p in percentages):
            fail("percentages", "must be a non-empty list of percentages in (0, 100)")
        at_least("noise", 0)
        if len(values["weights"]) != 2 or any(not w > 0 for w in values["weights"]):
            fail("weights", "must be two positive weights [direct, diagonal]")
        choice("score", ("accuracy", "probability", "logit"))
    elif group == "faithfulness_correlation":
        at_least("subset_size", 1)
        if pixels and values["subset_size"] > pixels:
            fail("subset_size", f"must be at most the {pixels} pixels (dataset.image_size²)")
        at_least("n_subsets", 2)  # a correlation needs two points
        choice("baseline", ("black", "mean"))
        choice("output", ("probability", "logit"))
    elif group == "monotonicity_correlation":
        at_least("pixels_per_step", 1)
        if pixels and values["pixels_per_step"] > pixels:
            fail("pixels_per_step", f"must be at most the {pixels} pixels (dataset.image_size²)")
        at_least("n_samples", 1)
        if not values["low"] < values["high"]:
            fail("high", f"must exceed low ({values['low']!r})")
        if not values["eps"] > 0:
            fail("eps", "must be positive")
        choice("output", ("probability", "logit"))
    elif group == "irof":
        at_least("cells", 1)
        if image_size and values["cells"] > image_size:
            fail("cells", f"must be at most dataset.image_size ({image_size})")
        choice("output", ("probability", "logit"))
    elif group == "effective_complexity":
        at_least("eps", 0)


BY_COLUMN: dict[str, Metric] = {m.column: m for m in METRICS}
#: Every declared column (the summary, comparisons and figures take those present).
ALL_COLUMNS: tuple[str, ...] = tuple(m.column for m in METRICS)
#: The default run's columns (every per-image file of a default run has them).
COLUMNS: tuple[str, ...] = DEFAULT_COLUMNS

# The explanation time per image, a summary column with a direction but no metric.
TIME = Metric("ms_per_image", "T (ms)", "Time per image", LOWER, unit="ms", scale=1000.0)


def metric(column: str) -> Metric:
    """The entry of ``column`` (a metric or ``ms_per_image``); ValueError otherwise."""
    if column == TIME.column:
        return TIME
    try:
        return BY_COLUMN[column]
    except KeyError:
        raise ValueError(f"unknown metric {column!r}; valid: {', '.join(ALL_COLUMNS)}") from None
