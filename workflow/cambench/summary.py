"""Aggregation of per-image metrics into the summary tables (CSV and Markdown)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from cambench.atomic import atomic_output
from cambench.evaluation import read_metric_csvs

# Metric columns of the per-image CSVs (already in percent) and their direction.
METRIC_COLUMNS = {
    "AD": "lower",
    "AI": "higher",
    "AG": "higher",
    "insertion": "higher",
    "deletion": "lower",
    "pointing_game": "higher",
    "energy_pointing_game": "higher",
}


def summarize_metrics(per_image: pd.DataFrame) -> pd.DataFrame:
    """One row per model × method: the number of images and each metric's mean."""
    missing = [c for c in ("model", "method", *METRIC_COLUMNS) if c not in per_image.columns]
    if missing:
        raise ValueError(f"per-image metrics lack columns {missing}")
    grouped = per_image.groupby(["model", "method"], sort=False)
    summary = grouped[list(METRIC_COLUMNS)].mean()
    summary.insert(0, "n_images", grouped.size())
    if "seconds" in per_image.columns:
        summary["ms_per_image"] = 1000 * grouped["seconds"].mean()
    return summary.reset_index()


def model_table(history_paths: list[str | os.PathLike]) -> pd.DataFrame:
    """One row per trained model from its training history JSON."""
    rows = []
    for path in history_paths:
        try:
            history = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: cannot read training history ({err})") from err
        rows.append(
            {
                "model": history.get("model", Path(path).stem),
                "kind": history.get("kind", ""),
                "epochs": len(history.get("epochs", [])),
                "test_accuracy": 100 * float(history["test_acc"]),
                "parameters": history.get("parameters"),
                "train_seconds": float(history.get("seconds", float("nan"))),
            }
        )
    return pd.DataFrame(rows)


def _markdown(frame: pd.DataFrame, digits: int = 1) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        return str(value)

    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = (
        "|" + "|".join("---" if frame[c].dtype == object else "---:" for c in frame.columns) + "|"
    )
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def write_summary(
    csv_paths: list[str | os.PathLike],
    history_paths: list[str | os.PathLike],
    out_csv: str | os.PathLike,
    out_md: str | os.PathLike,
    experiment: str = "",
) -> pd.DataFrame:
    """Write ``summary.csv`` (model × method means) and ``summary.md`` (models and methods)."""
    summary = summarize_metrics(read_metric_csvs(csv_paths))
    models = model_table(history_paths)
    with atomic_output(out_csv) as tmp:
        summary.to_csv(tmp, index=False, float_format="%.4f")
    arrows = {c: f"{c} {'↓' if d == 'lower' else '↑'}" for c, d in METRIC_COLUMNS.items()}
    shown = summary.rename(columns=arrows)
    text = [f"# cambench summary{': ' + experiment if experiment else ''}", ""]
    text += ["## Models", "", _markdown(models), ""]
    text += [
        "## Saliency methods",
        "",
        "Means over the evaluated test images, in percent (AD, AI, AG from the masked image "
        "`x ⊙ S`; insertion/deletion: area under the curve; pointing game and energy pointing "
        "game against the ground-truth object masks). ↓ lower is better, ↑ higher is better.",
        "",
        _markdown(shown),
        "",
    ]
    with atomic_output(out_md) as tmp:
        Path(tmp).write_text("\n".join(text))
    return summary
