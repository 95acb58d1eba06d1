"""The summarize job: per-image metrics, training histories and sanity-check results
in; the summary and comparison tables (CSV, Markdown, LaTeX) out."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

from cambench import joblog
from cambench.best import SANITY_BASELINES, flagged, registered_methods
from cambench.digest import file_sha256
from cambench.metric_table import ALL_COLUMNS
from cambench.summary import aggregate, consistency, render
from cambench.summary.ranks import rank_table
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


#: The columns of ``ranks.csv`` before the per-metric ranks and after them.
RANK_KEYS = ("model", "method")
RANK_STATS = (
    "median_rank",
    "mean_rank",
    "mean_rank_ci_low",
    "mean_rank_ci_high",
    "n_metrics",
    "n_images",
    "sanity_baseline",
    "model_independent",
)


def ranks(
    per_image: pd.DataFrame,
    summary: pd.DataFrame,
    excluded: Sequence[tuple[str, str]],
    resamples: int,
    confidence: float,
    seed: int,
) -> pd.DataFrame:
    """The rank table (:func:`cambench.summary.ranks.rank_table`) of every metric
    present, without the ``excluded`` pairs (degenerate maps), with two marks from the
    summary: ``sanity_baseline`` and ``model_independent`` (any randomization check's
    flag, :func:`cambench.best.flagged`). Rows in the summary's order."""
    metrics = [c for c in ALL_COLUMNS if c in per_image.columns]
    table = rank_table(per_image, resamples, confidence, seed, excluded=excluded, metrics=metrics)
    columns = [*RANK_KEYS, *(f"rank_{c}" for c in metrics), *RANK_STATS]
    if table.empty:
        return pd.DataFrame(columns=[c for c in columns if c in RANK_KEYS or c in RANK_STATS])
    marks = summary[["model", "method"]].assign(model_independent=flagged(summary))
    table = table.merge(marks, on=["model", "method"], how="left")
    table["model_independent"] = table["model_independent"].astype("boolean").fillna(False)
    table["model_independent"] = table["model_independent"].astype(bool)
    ran = dict(zip(summary["method"].astype(str), registered_methods(summary), strict=True))
    method = table["method"].astype(str)  # a variant's label: the method it ran
    table["sanity_baseline"] = method.map(ran).fillna(method).isin(SANITY_BASELINES)
    return table[[c for c in columns if c in table.columns]]


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
    ranks_csv: str | os.PathLike | None = None,
    data_randomization_paths: Sequence[str | os.PathLike] = (),
    roar_paths: Sequence[str | os.PathLike] = (),
    sanity_check_paths: Sequence[str | os.PathLike] = (),
) -> pd.DataFrame:
    """Write the summary and the comparison tables.

    ``pairs``: ``(model, reference, relation)`` to compare
    (:func:`cambench.specs.reference_pairs`); ``statistics``: the bootstrap's
    ``resamples``, ``confidence`` and ``seed``. Every per-image row must be complete
    (:func:`cambench.summary.consistency.check_complete_rows`); with ``expected`` (the
    configuration's ``models``, ``methods`` and ``metrics`` settings) and the models'
    ``checkpoint_paths`` (``<model>.pt``), every input must record exactly these
    settings (:func:`cambench.summary.consistency.stale_inputs`). The rank table across
    metrics (:func:`ranks`) is a section of ``summary.md`` and, with ``ranks_csv``, a
    table of its own.
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
    # the data randomization check (cambench.jobs.datarand): one row per model × method
    data_randomization = read_optional_tables(
        data_randomization_paths, "data randomization results"
    )
    if not data_randomization.empty:
        summary = summary.merge(
            data_randomization[["model", "method", "spearman", "data_independent"]].rename(
                columns={"spearman": "data_randomization_spearman"}
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
    excluded = list(zip(degenerate["model"], degenerate["method"], strict=True))
    rank_rows = ranks(per_image, summary, excluded, resamples, confidence, seed)
    if ranks_csv is not None:
        write_csv(ranks_csv, rank_rows, "%.4f")
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
            ranks=render.rank_section(rank_rows, confidence, resamples, excluded),
            data_randomization=data_randomization,
            sanity_checks=read_optional_tables(sanity_check_paths, "sanity check results"),
        )
        + render.appended_sections(roar_paths),
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
    outputs = (out_csv, out_md, out_tex, comparison_csv, comparison_md, comparison_tex)
    joblog.footer(start, [str(p) for p in (*outputs, *([ranks_csv] if ranks_csv else []))])
    return summary
