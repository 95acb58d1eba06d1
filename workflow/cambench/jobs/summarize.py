"""The summarize job: per-image metrics, training histories and sanity-check results
in; the summary and comparison tables (CSV, Markdown, LaTeX) out."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

from cambench import joblog
from cambench.digest import file_sha256
from cambench.summary import aggregate, consistency, render
from cambench.table_io import (
    read_json,
    read_optional_tables,
    read_table,
    write_csv,
    write_text,
)

#: A model whose test accuracy is within this many percentage points of chance
#: (100 / classes) is flagged in the summary: its maps explain noise.
NEAR_CHANCE_POINTS = 10.0


def near_chance_warnings(histories: Sequence[dict[str, Any]]) -> list[str]:
    """A warning per model whose test accuracy is near chance."""
    warnings = []
    for history in histories:
        classes = history.get("num_classes")
        if not classes:
            continue
        chance = 100.0 / classes
        accuracy = 100.0 * float(history["test_acc"])
        if accuracy < chance + NEAR_CHANCE_POINTS:
            warnings.append(
                f"model {history['model']} has {accuracy:.1f} % test accuracy, within "
                f"{NEAR_CHANCE_POINTS:g} points of chance ({chance:.1f} % on {classes} classes): "
                "its saliency maps and metrics say little."
            )
    return warnings


def degenerate_warnings(counts: pd.DataFrame) -> list[str]:
    """A warning per model × method with degenerate maps (all zero or constant)."""
    return [
        f"{row.model} × {row.method}: {row.degenerate_maps} of {row.n_images} maps are "
        "degenerate (all zero or constant: a target layer too small, or a method that found "
        "nothing); their scores say nothing about the method, and the pair is neither bold "
        "nor ranked."
        for row in counts.itertuples(index=False)
    ]


def run(
    csv_paths: Sequence[str | os.PathLike],
    history_paths: Sequence[str | os.PathLike],
    randomization_paths: Sequence[str | os.PathLike],
    pairs: Sequence[tuple[str, str, str]],
    statistics: dict[str, Any],
    experiment: str,
    out_csv: str | os.PathLike,
    out_md: str | os.PathLike,
    out_tex: str | os.PathLike,
    comparison_csv: str | os.PathLike,
    comparison_md: str | os.PathLike,
    comparison_tex: str | os.PathLike,
    expected: dict[str, Any] | None = None,
    checkpoint_paths: Sequence[str | os.PathLike] = (),
) -> pd.DataFrame:
    """Write the summary and the comparison tables.

    ``pairs``: ``(model, reference, relation)`` to compare
    (:func:`cambench.specs.reference_pairs`); ``statistics``: the bootstrap's
    ``resamples``, ``confidence`` and ``seed``. Every per-image row must be complete
    (:func:`cambench.summary.consistency.check_complete_rows`); with ``expected`` (the
    configuration's ``models``, ``methods`` and ``metrics`` settings) and the models'
    ``checkpoint_paths`` (``<model>.pt``), every input must record exactly these
    settings (:func:`cambench.summary.consistency.stale_inputs`).
    """
    start = joblog.header(
        "summarize",
        {"experiment": experiment, "statistics": statistics, "pairs": list(pairs)},
        [str(p) for p in (*csv_paths, *history_paths, *randomization_paths)],
    )
    resamples, confidence, seed = (
        int(statistics["resamples"]),
        float(statistics["confidence"]),
        int(statistics["seed"]),
    )
    if isinstance(csv_paths, (str, os.PathLike)) or not csv_paths:
        raise ValueError(f"expected a non-empty list of per-image metric files, got {csv_paths!r}")
    frames = []
    for path in csv_paths:
        frame = read_table(path, "per-image metrics", required=("model", "method", "index"))
        consistency.check_complete_rows(frame, path)
        frames.append((str(path), frame))
    per_image = pd.concat([f for _, f in frames], ignore_index=True)
    if per_image.empty:
        raise ValueError(f"the per-image metric files hold no image: {[str(p) for p in csv_paths]}")
    problems = aggregate.duplicate_images(per_image)
    if problems:
        raise ValueError("the per-image metrics are inconsistent: " + "; ".join(problems))
    summary = aggregate.summarize_metrics(per_image, resamples, confidence, seed)
    verdicts = aggregate.randomization_verdicts(
        read_optional_tables(randomization_paths, "randomization results")
    )
    if not verdicts.empty:
        summary = summary.merge(
            verdicts[["model", "method", "min_spearman", "model_independent"]].rename(
                columns={"min_spearman": "randomization_min_spearman"}
            ),
            on=["model", "method"],
            how="left",
        )
    degenerate = aggregate.degenerate_counts(per_image)
    if not degenerate.empty:  # the column exists only when some maps are degenerate
        summary = summary.merge(
            degenerate[["model", "method", "degenerate_maps"]], on=["model", "method"], how="left"
        )
        summary["degenerate_maps"] = summary["degenerate_maps"].fillna(0).astype(int)
    histories = [read_json(p, "training history") for p in history_paths]
    if expected is not None:
        checkpoints = {os.path.basename(str(p)).removesuffix(".pt"): p for p in checkpoint_paths}
        stale = consistency.stale_inputs(
            frames,
            list(zip(map(str, history_paths), histories, strict=True)),
            expected,
            {name: file_sha256(path) for name, path in checkpoints.items()},
        )
        if stale:
            raise ValueError(
                f"{stale}: these results were not made with the current configuration "
                "(a restored copy?); delete the file and rerun"
            )
    tolerance = None
    if "pointing_tolerance" in per_image.columns:
        tolerance = float(per_image["pointing_tolerance"].max())
    write_csv(out_csv, summary, "%.4f")
    write_text(
        out_md,
        render.summary_markdown(
            summary,
            aggregate.model_table(histories),
            verdicts,
            experiment,
            aggregate.describe_protocols(per_image),
            confidence,
            resamples,
            tolerance,
            near_chance_warnings(histories) + degenerate_warnings(degenerate),
            consistency.undefined_counts(per_image),
        ),
    )
    write_text(out_tex, render.summary_latex(summary, confidence))
    present = list(dict.fromkeys(per_image["model"]))
    pairs = [pair for pair in pairs if pair[0] in present and pair[1] in present]
    comparison = aggregate.compare_models(per_image, pairs, resamples, confidence, seed)
    note = render.comparison_note(present) if comparison.empty else ""
    write_csv(comparison_csv, comparison, "%.6g")
    write_text(comparison_md, render.comparison_markdown(comparison, note, experiment))
    write_text(comparison_tex, render.comparison_latex(comparison, note))
    shown = [c for c in summary.columns if not c.endswith(("_ci_low", "_ci_high"))]
    print(summary[shown].to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    joblog.footer(
        start,
        [str(p) for p in (out_csv, out_md, out_tex, comparison_csv, comparison_md, comparison_tex)],
    )
    return summary
