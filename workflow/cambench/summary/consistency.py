"""Checks that the summary's inputs are whole and current, before anything is averaged.

Two faults give a plausible summary that is wrong without them:

- **an incomplete row** — a per-image CSV row cut short reads back with NaN in its
  last columns, and a NaN-skipping mean then averages fewer images than ``n`` says.
  Every value a metric always defines must be present and finite; a missing one is an
  error naming the file and its line. Localization metrics are legitimately undefined
  for an image without an object mask (:attr:`cambench.metric_table.Metric.may_be_undefined`);
  their NaN stay, and the summary says how many images each was computed on.
- **a restored copy of old results** — files copied back from before a parameter change
  look current to Snakemake (its records are per output path). Every input records
  what made it: the per-image CSVs the method's parameters, the checkpoint's SHA-256
  and the metrics protocol; the training histories the model's config. Each is
  compared with the configuration, and the first that differs is named.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cambench.metric_table import METRICS

#: Per-image columns that every row must hold as a finite number.
ALWAYS_DEFINED = (
    "index",
    "label",
    "target",
    "p",
    "o",
    *(m.column for m in METRICS if not m.may_be_undefined),
)


def check_complete_rows(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """ValueError naming ``path`` and the first line (1 = the header) whose always
    defined values are missing or not finite."""
    columns = [c for c in ALWAYS_DEFINED if c in frame.columns]
    if not columns or frame.empty:
        return
    values = frame[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        value = frame[columns[col]].iloc[row]
        state = "missing" if pd.isna(value) else str(value)
        raise ValueError(
            f"{path}, line {row + 2}: column {columns[col]!r} is {state}"
            " (a row cut short or a corrupt value); delete the file and rerun its metrics job"
        )


def _first_difference(recorded: Any, expected: Any, prefix: str) -> str | None:
    if isinstance(recorded, dict) and isinstance(expected, dict):
        # keys the configuration sets (schema defaults filled); what a file records
        # beyond them is derived from them (a CA-Stream's base_config)
        for key in sorted(expected):
            found = _first_difference(recorded.get(key), expected.get(key), f"{prefix}.{key}")
            if found:
                return found
        return None
    if recorded != expected:
        return f"{prefix}: recorded {json.dumps(recorded)}, configured {json.dumps(expected)}"
    return None


def _protocol_difference(recorded: dict[str, Any], settings: Mapping[str, Any]) -> str | None:
    if recorded.get("protocol") != settings.get("protocol"):
        return (
            f"metrics.protocol: recorded {recorded.get('protocol')!r}, configured "
            f"{settings.get('protocol')!r}"
        )
    if settings.get("protocol") != "custom":
        return None  # a preset fixes its values
    for key, value in settings.items():
        if key in recorded and key != "protocol" and recorded[key] != value:
            return f"metrics.{key}: recorded {recorded[key]!r}, configured {value!r}"
    return None


def stale_inputs(
    per_image: Sequence[tuple[str, pd.DataFrame]],
    histories: Sequence[tuple[str, dict[str, Any]]],
    expected: Mapping[str, Any],
    checkpoint_sha256: Mapping[str, str],
) -> str | None:
    """The first input whose recorded settings differ from ``expected`` (``models``:
    name → config entry; ``methods``: name → full parameters; ``metrics``: the metrics
    job's settings), as one line naming the file and the key; ``None`` when all agree.
    ``checkpoint_sha256``: model name → SHA-256 of its current checkpoint file."""
    models = expected.get("models", {})
    for path, history in histories:
        name = history.get("model")
        if name in models and "config" in history:
            found = _first_difference(history["config"], models[name], f"models.{name}")
            if found:
                return f"{path}: {found}"
    methods, metrics = expected.get("methods", {}), expected.get("metrics", {})
    for path, frame in per_image:
        if frame.empty:
            continue
        missing = [c for c in ("params", "model_sha256", "protocol") if c not in frame.columns]
        if missing:
            return f"{path}: no column {missing}: written by an older cambench"
        first = frame.iloc[0]
        model, method = str(first["model"]), str(first["method"])
        if method in methods:
            found = _first_difference(
                json.loads(first["params"]), methods[method], f"methods.{method}"
            )
            if found:
                return f"{path}: {found}"
        sha = checkpoint_sha256.get(model)
        if sha is not None and first["model_sha256"] != sha:
            return (
                f"{path}: made from another checkpoint of model {model} "
                f"({str(first['model_sha256'])[:12]}… ≠ {sha[:12]}…)"
            )
        if metrics:
            found = _protocol_difference(json.loads(first["protocol"]), metrics)
            tolerance = metrics.get("pointing_tolerance")
            if not found and tolerance is not None:
                recorded = float(first.get("pointing_tolerance", np.nan))
                if recorded != float(tolerance):
                    found = (
                        f"metrics.pointing_tolerance: recorded {recorded:g}, configured "
                        f"{float(tolerance):g}"
                    )
            if found:
                return f"{path}: {found}"
    return None


def undefined_counts(per_image: pd.DataFrame) -> list[str]:
    """One line per model × method × metric that some images leave undefined: on how
    many of the images the mean was computed."""
    lines = []
    columns = [m.column for m in METRICS if m.may_be_undefined and m.column in per_image]
    if not columns:
        return lines
    for (model, method), group in per_image.groupby(["model", "method"], sort=False):
        for column in columns:
            n = int(group[column].notna().sum())
            if n < len(group):
                lines.append(
                    f"{model} × {method}: {column} on {n} of {len(group)} images "
                    "(the others have no object mask)"
                )
    return lines
