"""Several experiments side by side: the same model × method rows of each experiment's
``summary.csv`` next to each other, each value with its bootstrap interval.

The common case is one method evaluated under several experiments (another dataset,
another protocol, another training recipe): ``cambench compare results/a results/b``
prints one Markdown table whose row is a model × method and whose column is one
metric of one experiment, so the effect of the setting reads along a row.

>>> import pandas as pd
>>> a = pd.DataFrame({"model": ["m"], "method": ["gradcam"], "n_images": [8],
...                   "AD": [40.0], "AD_ci_low": [35.0], "AD_ci_high": [45.0]})
>>> b = a.assign(AD=[30.0], AD_ci_low=[26.0], AD_ci_high=[34.0])
>>> table = experiments_table({"a": a, "b": b}, metrics=["AD"])
>>> list(table.columns)
['model', 'method', 'AD a', 'AD b']
>>> table.iloc[0, 2:].tolist()
['40.0 [35.0, 45.0]', '30.0 [26.0, 34.0]']
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from cambench.metric_table import ALL_COLUMNS, TIME, metric
from cambench.summary.render import fmt


def read_summary(path: str | os.PathLike) -> tuple[str, pd.DataFrame]:
    """The experiment name and the summary table of ``path``: a results folder
    (``results/<experiment>``, its ``summary.csv``) or a ``summary.csv`` itself.

    A missing file is a FileNotFoundError naming it and the job that makes it."""
    path = Path(path)
    csv = path if path.suffix == ".csv" else path / "summary.csv"
    if not csv.is_file():
        raise FileNotFoundError(
            f"{csv} does not exist: run the experiment first (snakemake --cores all "
            "--configfile <its file>) or name a results/<experiment> folder"
        )
    table = pd.read_csv(csv)
    missing = [c for c in ("model", "method") if c not in table.columns]
    if missing:
        raise ValueError(f"{csv} is not a cambench summary table: no column {missing}")
    name = csv.parent.name if csv.name == "summary.csv" else csv.stem
    return name, table


def _cell(row: pd.Series, column: str) -> str:
    value = row.get(column)
    if value is None or pd.isna(value):
        return "–"
    low, high = row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return fmt(float(value))
    return f"{fmt(float(value))} [{fmt(float(low))}, {fmt(float(high))}]"


def experiments_table(
    summaries: Mapping[str, pd.DataFrame], metrics: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per model × method found in any of ``summaries`` (experiment name →
    summary table), one column per metric × experiment: the mean and its interval, or
    ``–`` where that experiment lacks the pair. ``metrics``: columns of the metric
    table (default: every metric present in any summary, in the table's order)."""
    if not summaries:
        raise ValueError("compare needs at least one summary")
    present = set().union(*(s.columns for s in summaries.values()))
    if metrics is None:
        metrics = [c for c in (*ALL_COLUMNS, TIME.column) if c in present]
    for column in metrics:
        if column != TIME.column:
            metric(column)  # ValueError naming the valid metrics
    keys = list(
        dict.fromkeys(
            (str(m), str(k))
            for s in summaries.values()
            for m, k in zip(s["model"], s["method"], strict=True)
        )
    )
    indexed = {
        name: s.assign(model=s["model"].astype(str), method=s["method"].astype(str)).set_index(
            ["model", "method"]
        )
        for name, s in summaries.items()
    }
    rows = []
    for model, method in keys:
        row: dict[str, str] = {"model": model, "method": method}
        for column in metrics:
            for name, table in indexed.items():
                hit = table.loc[(model, method)] if (model, method) in table.index else None
                if isinstance(hit, pd.DataFrame):  # a duplicated pair: the first row
                    hit = hit.iloc[0]
                row[f"{column} {name}"] = "–" if hit is None else _cell(hit, column)
        rows.append(row)
    return pd.DataFrame(rows)


def compare_markdown(paths: Sequence[str | os.PathLike], metrics: Sequence[str] | None) -> str:
    """The Markdown table of :func:`experiments_table` for the results folders (or
    ``summary.csv`` files) ``paths``, with a line naming the experiments."""
    summaries: dict[str, pd.DataFrame] = {}
    for path in paths:
        name, table = read_summary(path)
        if name in summaries:
            name = str(path)
        summaries[name] = table
    table = experiments_table(summaries, metrics)
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" if c in ("model", "method") else "---:" for c in table.columns)
    lines = [
        f"Experiments: {', '.join(summaries)}. Each cell: mean [bootstrap interval], "
        "– where the experiment has no such model × method.",
        "",
        header,
        rule + "|",
    ]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"
