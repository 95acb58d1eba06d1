"""The summary and comparison tables: statistics in :mod:`~cambench.summary.aggregate`,
rendering in :mod:`~cambench.summary.render`; the summarize job
(:mod:`cambench.jobs.summarize`) reads the files and writes the tables."""

from cambench.summary.aggregate import (
    COMPARISON_COLUMNS,
    compare_models,
    describe_protocols,
    duplicate_images,
    model_table,
    randomization_verdicts,
    summarize_metrics,
)
from cambench.summary.render import (
    best_mask,
    comparison_latex,
    comparison_markdown,
    format_p,
    summary_latex,
    summary_markdown,
)

__all__ = [
    "COMPARISON_COLUMNS",
    "best_mask",
    "compare_models",
    "comparison_latex",
    "comparison_markdown",
    "describe_protocols",
    "duplicate_images",
    "format_p",
    "model_table",
    "randomization_verdicts",
    "summarize_metrics",
    "summary_latex",
    "summary_markdown",
]
