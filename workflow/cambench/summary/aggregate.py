"""Aggregation of per-image metrics into the summary and comparison tables.

``summary.{csv,md,tex}``: one row per model × method with the mean of every metric and
its percentile-bootstrap confidence interval over the images, the explanation time per
image, the protocol, and (when the sanity check ran) the randomization verdict; the
best value of each column is bold within each model.

``comparison.{csv,md,tex}``: each non-baseline model against its reference, per method
and metric: the paired difference over the same images (joined on ``index``), its
bootstrap interval and the paired Wilcoxon signed-rank p-value. A ``castream`` model is
compared with its ``base``, a ``gradalign`` model with the first ``baseline`` model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cambench.atomic import atomic_output
from cambench.evaluation import read_metric_csvs
from cambench.metrics.statistics import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    bootstrap_mean_ci,
    bootstrap_means,
    wilcoxon_signed_rank,
)

# Metric columns of the per-image CSVs (already in percent) and their direction.
METRIC_COLUMNS = {
    "AD": "lower",
    "AI": "higher",
    "AG": "higher",
    "insertion": "higher",
    "deletion": "lower",
    "pointing_game": "higher",
    "energy_pointing_game": "higher",
    "iou": "higher",
}
# Short headers for the Markdown and LaTeX tables.
HEADERS = {
    "AD": "AD",
    "AI": "AI",
    "AG": "AG",
    "insertion": "Ins.",
    "deletion": "Del.",
    "pointing_game": "PG",
    "energy_pointing_game": "EPG",
    "iou": "IoU",
    "ms_per_image": "T (ms)",
}
SIGNIFICANCE = 0.05


# ------------------------------------------------------------------------ summary


def _protocol_name(spec: object) -> str:
    if not isinstance(spec, str) or not spec:
        return ""
    try:
        return str(json.loads(spec).get("protocol", ""))
    except (json.JSONDecodeError, AttributeError):
        return spec


def describe_protocols(per_image: pd.DataFrame) -> list[str]:
    """One human-readable line per distinct protocol in the per-image metrics."""
    from cambench.metrics.protocols import Protocol

    if "protocol" not in per_image.columns:
        return []
    lines = []
    for spec in dict.fromkeys(per_image["protocol"].dropna()):
        try:
            d = json.loads(spec)
            d["name"] = d.pop("protocol")
            lines.append(Protocol(**d).describe())
        except (json.JSONDecodeError, TypeError, KeyError):
            lines.append(str(spec))
    return lines


def summarize_metrics(
    per_image: pd.DataFrame,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per model × method: number of images, each metric's mean over the images
    with its ``confidence`` percentile-bootstrap interval (columns ``<metric>``,
    ``<metric>_ci_low``, ``<metric>_ci_high``; the images are resampled, ``resamples``
    times, seeded), the explanation time per image (``ms_per_image``) and the protocol.

    NaN values (e.g. localization of an image without an object mask) are skipped.
    """
    missing = [c for c in ("model", "method", *METRIC_COLUMNS) if c not in per_image.columns]
    if missing:
        raise ValueError(f"per-image metrics lack columns {missing}")
    rows = []
    for (model, method), group in per_image.groupby(["model", "method"], sort=False):
        values = group[list(METRIC_COLUMNS)].to_numpy(dtype=float)
        mean, low, high = bootstrap_mean_ci(values, resamples, confidence, seed)
        row: dict[str, Any] = {"model": model, "method": method, "n_images": len(group)}
        for k, column in enumerate(METRIC_COLUMNS):
            row[column] = mean[k]
            row[f"{column}_ci_low"] = low[k]
            row[f"{column}_ci_high"] = high[k]
        if "seconds" in group.columns:
            row["ms_per_image"] = 1000 * float(group["seconds"].mean())
        protocols = sorted({_protocol_name(p) for p in group.get("protocol", pd.Series([""]))})
        row["protocol"] = "+".join(p for p in protocols if p)
        rows.append(row)
    return pd.DataFrame(rows)


def model_table(history_paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """One row per trained model from its training history JSON: test accuracy (%),
    the held-out gradient cosine after the last epoch, parameters and training time."""
    rows = []
    for path in history_paths:
        try:
            history = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: cannot read training history ({err})") from err
        epochs = history.get("epochs", [])
        rows.append(
            {
                "model": history.get("model", Path(path).stem),
                "kind": history.get("kind", ""),
                "epochs": len(epochs),
                "test_accuracy": 100 * float(history["test_acc"]),
                "grad_cosine": float(epochs[-1].get("grad_cosine", float("nan")))
                if epochs
                else float("nan"),
                "parameters": history.get("parameters"),
                "trainable_parameters": history.get("trainable_parameters"),
                "train_seconds": float(history.get("seconds", float("nan"))),
            }
        )
    return pd.DataFrame(rows)


MODEL_COLUMNS = {
    "model": "model",
    "kind": "kind",
    "epochs": "epochs",
    "test_accuracy": "test acc. (%)",
    "grad_cosine": "grad. cosine",
    "parameters": "parameters",
    "trainable_parameters": "trainable",
    "train_seconds": "train time (s)",
}


def models_markdown(models: pd.DataFrame) -> str:
    """The models table with a caption that says how to read the gradient cosine."""
    header = [MODEL_COLUMNS.get(c, c) for c in models.columns]
    rows = []
    for row in models.itertuples(index=False):
        cells = []
        for column, value in zip(models.columns, row, strict=True):
            if column == "grad_cosine":
                cells.append(_fmt(value, 3))
            elif column in ("test_accuracy", "train_seconds"):
                cells.append(_fmt(value, 1))
            else:
                cells.append("" if value is None else str(value))
        rows.append(cells)
    align = ["l" if c in ("model", "kind") else "r" for c in models.columns]
    caption = (
        "Test accuracy on the whole test split. Grad. cosine: mean cosine similarity between "
        "the standard input gradient and the guided-backpropagation gradient of the "
        "ground-truth logit on a fixed held-out batch, after the last epoch (what "
        "gradient-aligned training raises). Trainable: parameters that training updated "
        "(a CA-Stream model trains its stream only)."
    )
    return "\n".join([caption, "", _markdown_table(header, rows, align)])


def read_randomization(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate the randomization CSVs (one per model × method)."""
    frames = []
    for path in paths:
        try:
            frames.append(pd.read_csv(path))
        except Exception as err:  # pandas raises many types
            raise ValueError(f"{path}: cannot read randomization results ({err})") from err
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def randomization_verdicts(randomization: pd.DataFrame) -> pd.DataFrame:
    """Per model × method: the lowest and the last mean Spearman correlation of the
    cascade and the ``model_independent`` flag."""
    columns = ["model", "method", "min_spearman", "final_spearman", "model_independent"]
    if randomization.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for (model, method), group in randomization.groupby(["model", "method"], sort=False):
        steps = group.sort_values("step")
        after = steps[steps["step"] > 0]
        rows.append(
            {
                "model": model,
                "method": method,
                "min_spearman": float(after["spearman"].min()),
                "final_spearman": float(steps["spearman"].iloc[-1]),
                "model_independent": bool(steps["model_independent"].iloc[0]),
            }
        )
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------- comparison


def reference_pairs(models: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """``(model, reference, relation)`` for every model that has a reference: a
    ``castream`` model and its ``base``; a ``gradalign`` model and the first
    ``baseline``-kind model (config order)."""
    baselines = [n for n, m in models.items() if (m or {}).get("kind", "baseline") == "baseline"]
    pairs = []
    for name, model in models.items():
        kind = (model or {}).get("kind", "baseline")
        if kind == "castream" and model.get("base") in models:
            pairs.append((name, model["base"], "castream vs its base"))
        elif kind == "gradalign" and baselines:
            pairs.append((name, baselines[0], "gradalign vs the first baseline"))
    return pairs


COMPARISON_COLUMNS = [
    "model",
    "reference",
    "relation",
    "method",
    "metric",
    "direction",
    "n_pairs",
    "model_mean",
    "reference_mean",
    "difference",
    "ci_low",
    "ci_high",
    "wilcoxon_p",
]


def compare_models(
    per_image: pd.DataFrame,
    pairs: Sequence[tuple[str, str, str]],
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> pd.DataFrame:
    """Paired comparison of each (model, reference) on every method both have.

    Pairs are the images scored for both (joined on ``index``); a metric's pairs where
    either value is NaN are left out. ``difference`` = mean over pairs of
    ``model - reference`` (percentage points), with its percentile-bootstrap interval
    (pairs resampled) and the two-sided Wilcoxon signed-rank p-value.
    """
    rows = []
    alpha = (1 - confidence) / 2
    for model, reference, relation in pairs:
        ours = per_image[per_image["model"] == model]
        theirs = per_image[per_image["model"] == reference]
        methods = [m for m in dict.fromkeys(ours["method"]) if m in set(theirs["method"])]
        for method in methods:
            joined = ours[ours["method"] == method].merge(
                theirs[theirs["method"] == method], on="index", suffixes=("_m", "_r")
            )
            for metric, direction in METRIC_COLUMNS.items():
                a = joined[f"{metric}_m"].to_numpy(dtype=float)
                b = joined[f"{metric}_r"].to_numpy(dtype=float)
                keep = np.isfinite(a) & np.isfinite(b)
                a, b = a[keep], b[keep]
                d = a - b
                if d.size:
                    means = bootstrap_means(d, resamples, seed)
                    low, high = (
                        np.quantile(means, [alpha, 1 - alpha]) if d.size > 1 else (np.nan,) * 2
                    )
                    p = wilcoxon_signed_rank(d)[1]
                else:
                    low = high = p = np.nan
                rows.append(
                    {
                        "model": model,
                        "reference": reference,
                        "relation": relation,
                        "method": method,
                        "metric": metric,
                        "direction": direction,
                        "n_pairs": int(d.size),
                        "model_mean": a.mean() if a.size else np.nan,
                        "reference_mean": b.mean() if b.size else np.nan,
                        "difference": d.mean() if d.size else np.nan,
                        "ci_low": low,
                        "ci_high": high,
                        "wilcoxon_p": p,
                    }
                )
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


# ------------------------------------------------------------------------ formatting


def _fmt(value: float, digits: int = 1, sign: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    text = f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"
    if float(text) == 0:
        text = f"{0:.{digits}f}"
    return text


def best_mask(values: np.ndarray, lower_is_better: bool, digits: int = 1) -> np.ndarray:
    """Which entries are the best of their column (ties at the displayed precision all
    count); none when fewer than two values are finite."""
    values = np.round(np.asarray(values, dtype=float), digits)
    finite = np.isfinite(values)
    if finite.sum() < 2:
        return np.zeros(values.shape, dtype=bool)
    best = np.nanmin(values) if lower_is_better else np.nanmax(values)
    return finite & (values == best)


def _tex_escape(text: str) -> str:
    out = str(text)
    for char, repl in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_")):
        out = out.replace(char, repl)
    out = out.replace("#", r"\#").replace("$", r"\$")
    return out


def _tex_num(text: str) -> str:
    """A formatted number in LaTeX text mode (so that ``\\textbf`` makes it bold),
    with a true minus sign."""
    if text == "–":
        return "--"
    return text.replace("-", "$-$").replace("+", "$+$")


def _markdown_table(header: list[str], rows: list[list[str]], align: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _summary_columns(summary: pd.DataFrame) -> list[str]:
    columns = [c for c in METRIC_COLUMNS if c in summary.columns]
    if "ms_per_image" in summary.columns:
        columns.append("ms_per_image")
    return columns


def _direction(column: str) -> str:
    return METRIC_COLUMNS.get(column, "lower")


def _arrow(column: str) -> str:
    return "↓" if _direction(column) == "lower" else "↑"


def _summary_cells(summary: pd.DataFrame, style: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary table, best values bold within each model."""
    columns = _summary_columns(summary)
    flagged = summary.get("model_independent", pd.Series(False, index=summary.index))
    flagged = flagged.fillna(False).astype(bool)
    if style == "md":
        header = ["model", "method", "n"] + [f"{HEADERS[c]} {_arrow(c)}" for c in columns]
    else:
        arrows = {"lower": r"$\downarrow$", "higher": r"$\uparrow$"}
        header = ["model", "method", "$n$"] + [
            f"{_tex_escape(HEADERS[c])} {arrows[_direction(c)]}" for c in columns
        ]
    bold = np.zeros((len(summary), len(columns)), dtype=bool)
    for model in dict.fromkeys(summary["model"]):
        where = np.flatnonzero((summary["model"] == model).to_numpy())
        for j, column in enumerate(columns):
            values = summary[column].to_numpy(dtype=float)[where]
            bold[where, j] = best_mask(values, _direction(column) == "lower")
    rows = []
    previous = None
    for i, record in enumerate(summary.to_dict("records")):
        model, method = str(record["model"]), str(record["method"])
        mark = "†" if flagged.iloc[i] else ""
        if style == "md":
            cells = [model, f"{method}{mark}", str(int(record["n_images"]))]
        else:
            shown = _tex_escape(model) if model != previous else ""
            cells = [
                shown,
                _tex_escape(method) + ("$^\\dagger$" if mark else ""),
                str(int(record["n_images"])),
            ]
        previous = model
        for j, column in enumerate(columns):
            value = _fmt(record[column])
            low = record.get(f"{column}_ci_low", np.nan)
            high = record.get(f"{column}_ci_high", np.nan)
            has_ci = low is not None and np.isfinite(low) and np.isfinite(high)
            if style == "md":
                text = f"**{value}**" if bold[i, j] and value != "–" else value
                if has_ci:
                    text += f" [{_fmt(low)}, {_fmt(high)}]"
            else:
                number = _tex_num(value)
                text = f"\\textbf{{{number}}}" if bold[i, j] and value != "–" else number
                if has_ci:
                    text += f" {{\\scriptsize [{_tex_num(_fmt(low))}, {_tex_num(_fmt(high))}]}}"
            cells.append(text)
        rows.append(cells)
    return header, rows


def summary_markdown(
    summary: pd.DataFrame,
    models: pd.DataFrame | None = None,
    verdicts: pd.DataFrame | None = None,
    experiment: str = "",
    protocols: Sequence[str] = (),
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    tolerance: float | None = None,
) -> str:
    """The Markdown summary: models, the metrics table (bold best per model) and the
    randomization sanity check."""
    text = [f"# cambench summary{': ' + experiment if experiment else ''}", ""]
    if protocols:
        text += [f"**Insertion/deletion protocol:** {'; '.join(protocols)}.", ""]
    if models is not None and not models.empty:
        text += ["## Models", "", models_markdown(models), ""]
    level = f"{100 * confidence:g} %"
    tol = "" if tolerance is None else f" (tolerance {tolerance:g} px)"
    text += [
        "## Saliency methods",
        "",
        f"Means over the evaluated test images, in percent, with their {level} percentile-"
        f"bootstrap confidence interval over the images ({resamples} resamples) in brackets. "
        "AD, AI, AG from the masked image `x ⊙ S`; Ins./Del.: area under the insertion/"
        f"deletion curve; PG: pointing game{tol}; EPG: energy-based pointing game; IoU: the "
        "map thresholded at its mean against the object mask; T: explanation time per image "
        "(ms, as measured when the maps were computed). ↓ lower is better, ↑ higher is "
        "better; the best value of each column within each model is **bold**.",
        "",
    ]
    header, rows = _summary_cells(summary, "md")
    text += [_markdown_table(header, rows, ["l", "l"] + ["r"] * (len(header) - 2)), ""]
    if verdicts is not None and not verdicts.empty:
        text += [
            "## Sanity check: model parameter randomization",
            "",
            "Spearman rank correlation between each method's maps on the trained model and on "
            "copies whose layers are re-initialized from the output down (Adebayo et al., "
            "2018), mean over the images. A method whose correlation stays at or above the "
            "threshold through the whole cascade does not depend on the model: it is flagged "
            "† above and here.",
            "",
        ]
        rows = [
            [
                str(v.model),
                str(v.method),
                _fmt(v.min_spearman, 3),
                _fmt(v.final_spearman, 3),
                "† model-independent" if v.model_independent else "depends on the model",
            ]
            for v in verdicts.itertuples(index=False)
        ]
        text += [
            _markdown_table(
                ["model", "method", "min. ρ", "ρ, all layers random", "verdict"],
                rows,
                ["l", "l", "r", "r", "l"],
            ),
            "",
        ]
    return "\n".join(text)


def summary_latex(summary: pd.DataFrame, confidence: float = DEFAULT_CONFIDENCE) -> str:
    """The metrics table as a LaTeX ``tabular`` (booktabs), best per model in bold."""
    header, rows = _summary_cells(summary, "tex")
    lines = [
        "% cambench summary table: means (percent) with "
        f"{100 * confidence:g}% bootstrap intervals; needs \\usepackage{{booktabs}}",
        r"\begin{tabular}{ll" + "r" * (len(header) - 2) + "}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
    ]
    previous = None
    for model, row in zip(summary["model"], rows, strict=True):
        if previous is not None and model != previous:
            lines.append(r"\midrule")
        previous = model
        lines.append(" & ".join(row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    if summary.get("model_independent", pd.Series(dtype=bool)).fillna(False).astype(bool).any():
        lines.insert(-1, r"% $^\dagger$: model-independent in the randomization sanity check")
    return "\n".join(lines)


def format_p(p: float) -> str:
    """A p-value as papers print it: ``p < 0.001`` below that, else three decimals."""
    if not np.isfinite(p):
        return "p = –"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _stars(p: float) -> str:
    if not np.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < SIGNIFICANCE else ""


def comparison_markdown(comparison: pd.DataFrame, note: str, experiment: str = "") -> str:
    text = [f"# cambench model comparisons{': ' + experiment if experiment else ''}", ""]
    if comparison.empty:
        return "\n".join([*text, note, ""])
    text += [
        "Paired over the same test images (joined on their index): Δ = model − reference, "
        "mean over the images in percentage points, with its bootstrap confidence interval "
        "in brackets and the two-sided paired Wilcoxon signed-rank p-value (no correction "
        "for multiple comparisons). ↓: a negative Δ is an improvement; ↑: a positive Δ is.",
        "",
    ]
    metrics = list(dict.fromkeys(comparison["metric"]))
    for (model, reference, relation), block in comparison.groupby(
        ["model", "reference", "relation"], sort=False
    ):
        text += [f"## {model} vs {reference} ({relation})", ""]
        rows = []
        for method, group in block.groupby("method", sort=False):
            by_metric = group.set_index("metric")
            cells = [str(method), str(int(group["n_pairs"].max()))]
            for metric in metrics:
                r = by_metric.loc[metric]
                p = r["wilcoxon_p"]
                cells.append(
                    f"{_fmt(r['difference'], sign=True)} [{_fmt(r['ci_low'])}, "
                    f"{_fmt(r['ci_high'])}], {format_p(p)}"
                )
            rows.append(cells)
        header = ["method", "n"] + [f"Δ {HEADERS[m]} {_arrow(m)}" for m in metrics]
        text += [_markdown_table(header, rows, ["l"] + ["r"] * (len(header) - 1)), ""]
    return "\n".join(text)


def comparison_latex(comparison: pd.DataFrame, note: str) -> str:
    metrics = list(METRIC_COLUMNS)
    arrows = {"lower": r"$\downarrow$", "higher": r"$\uparrow$"}
    header = ["model vs reference", "method"] + [
        rf"$\Delta$ {_tex_escape(HEADERS[m])} {arrows[METRIC_COLUMNS[m]]}" for m in metrics
    ]
    lines = [
        "% cambench model comparisons: paired mean difference (percentage points) with its "
        "bootstrap interval; * p<0.05, ** p<0.01, *** p<0.001 (paired Wilcoxon signed-rank)",
        r"\begin{tabular}{ll" + "r" * len(metrics) + "}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
    ]
    if comparison.empty:
        lines.append(rf"\multicolumn{{{len(header)}}}{{l}}{{{_tex_escape(note)}}} \\")
    first_block = True
    for (model, reference), block in comparison.groupby(["model", "reference"], sort=False):
        if not first_block:
            lines.append(r"\midrule")
        first_block = False
        label = f"{_tex_escape(model)} vs {_tex_escape(reference)}"
        for method, group in block.groupby("method", sort=False):
            by_metric = group.set_index("metric")
            cells = [label, _tex_escape(method)]
            label = ""
            for metric in metrics:
                if metric not in by_metric.index:
                    cells.append("--")
                    continue
                r = by_metric.loc[metric]
                stars = _stars(r["wilcoxon_p"])
                value = _tex_num(_fmt(r["difference"], sign=True))
                if stars:
                    value += f"$^{{{stars}}}$"
                low, high = _tex_num(_fmt(r["ci_low"])), _tex_num(_fmt(r["ci_high"]))
                cells.append(f"{value} {{\\scriptsize [{low}, {high}]}}")
            lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def comparison_note(models: dict[str, dict[str, Any]], present: Sequence[str]) -> str:
    """Why there is no comparison, in words."""
    if len(present) < 2:
        return f"Only one model ({', '.join(present) or 'none'}): there is no model comparison."
    return (
        "No model has a reference to be compared with (a castream model is compared with "
        "its base, a gradalign model with the first baseline model)."
    )


# --------------------------------------------------------------------------- writer


def _write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text)


def write_summary(
    csv_paths: Sequence[str | os.PathLike],
    history_paths: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    out_md: str | os.PathLike,
    experiment: str = "",
    out_tex: str | os.PathLike | None = None,
    models: dict[str, dict[str, Any]] | None = None,
    comparison_out: dict[str, str | os.PathLike] | None = None,
    randomization_paths: Sequence[str | os.PathLike] = (),
    statistics: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Write the summary tables (``out_csv``, ``out_md``, ``out_tex``) and, when
    ``comparison_out`` maps ``csv``/``md``/``tex`` to paths, the comparison tables.

    ``models``: the config's models mapping (``kind``, ``base``) for the comparisons;
    ``randomization_paths``: the sanity-check CSVs (optional); ``statistics``:
    ``{resamples, confidence, seed}`` of the bootstrap.
    """
    stats = {"resamples": DEFAULT_RESAMPLES, "confidence": DEFAULT_CONFIDENCE, "seed": 0}
    stats.update(statistics or {})
    resamples, confidence, seed = (
        int(stats["resamples"]),
        float(stats["confidence"]),
        int(stats["seed"]),
    )
    per_image = read_metric_csvs(csv_paths)
    summary = summarize_metrics(per_image, resamples, confidence, seed)
    verdicts = randomization_verdicts(read_randomization(randomization_paths))
    if not verdicts.empty:
        summary = summary.merge(
            verdicts[["model", "method", "min_spearman", "model_independent"]].rename(
                columns={"min_spearman": "randomization_min_spearman"}
            ),
            on=["model", "method"],
            how="left",
        )
    models_table = model_table(history_paths)
    protocols = describe_protocols(per_image)
    tolerance = None
    if "pointing_tolerance" in per_image.columns:
        tolerance = float(per_image["pointing_tolerance"].max())
    with atomic_output(out_csv) as tmp:
        summary.to_csv(tmp, index=False, float_format="%.4f")
    _write_text(
        out_md,
        summary_markdown(
            summary,
            models_table,
            verdicts,
            experiment,
            protocols,
            confidence,
            resamples,
            tolerance,
        ),
    )
    if out_tex is not None:
        _write_text(out_tex, summary_latex(summary, confidence))
    if comparison_out:
        present = list(dict.fromkeys(per_image["model"]))
        configured = models or {name: {"kind": "baseline"} for name in present}
        pairs = [
            pair
            for pair in reference_pairs(configured)
            if pair[0] in present and pair[1] in present
        ]
        comparison = compare_models(per_image, pairs, resamples, confidence, seed)
        note = comparison_note(configured, present) if comparison.empty else ""
        if "csv" in comparison_out:
            with atomic_output(comparison_out["csv"]) as tmp:
                comparison.to_csv(tmp, index=False, float_format="%.6g")
        if "md" in comparison_out:
            _write_text(comparison_out["md"], comparison_markdown(comparison, note, experiment))
        if "tex" in comparison_out:
            _write_text(comparison_out["tex"], comparison_latex(comparison, note))
    return summary


__all__ = [
    "METRIC_COLUMNS",
    "compare_models",
    "model_table",
    "models_markdown",
    "reference_pairs",
    "summarize_metrics",
    "write_summary",
]
