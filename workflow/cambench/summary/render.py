"""Rendering the summary and comparison tables: one cell model, written to Markdown
and to LaTeX (booktabs). The statistics come from :mod:`cambench.summary.aggregate`;
nothing here computes or reads a file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cambench import best
from cambench.best import (
    REFERENCE_BASELINES,
    SANITY_BASELINES,
    best_mask,
    rankable,
    registered_methods,
)
from cambench.metric_table import ALL_COLUMNS, METRICS, TIME, metric

SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class Cell:
    """One table cell: ``text`` (a label or an already formatted number), whether it is
    a number, bold, a confidence interval ``(low, high)`` (formatted), a dagger, and a
    p-value (Markdown prints it, LaTeX turns it into stars)."""

    text: str
    number: bool = False
    bold: bool = False
    ci: tuple[str, str] | None = None
    dagger: bool = False
    p: float | None = None


@dataclass(frozen=True)
class Table:
    """Header cells, rows of cells, column alignment (``l``/``r``), and the row indices
    after which a rule separates groups (LaTeX) — the model blocks."""

    header: list[str]
    rows: list[list[Cell]]
    align: list[str]
    groups: list[int]
    header_tex: list[str] | None = None


def fmt(value: float | None, digits: int = 1, sign: bool = False) -> str:
    """A number as the tables print it; ``–`` for a missing value, no ``-0.0``."""
    if value is None or not np.isfinite(value):
        return "–"
    text = f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"
    if float(text) == 0:
        text = f"{0:.{digits}f}"
    return text


def format_p(p: float) -> str:
    """A p-value as papers print it: ``p < 0.001`` below that, else three decimals."""
    if not np.isfinite(p):
        return "p = –"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def stars(p: float) -> str:
    if not np.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < SIGNIFICANCE else ""


# --------------------------------------------------------------------------- writers


def _markdown_cell(cell: Cell) -> str:
    text = cell.text + ("†" if cell.dagger else "")
    if cell.bold and cell.text != "–":
        text = f"**{text}**"
    if cell.ci is not None:
        text += f" [{cell.ci[0]}, {cell.ci[1]}]"
    if cell.p is not None:
        text += f", {format_p(cell.p)}"
    return text


def tex_escape(text: str) -> str:
    out = str(text)
    for char, repl in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_")):
        out = out.replace(char, repl)
    return out.replace("#", r"\#").replace("$", r"\$")


def _tex_num(text: str) -> str:
    """A formatted number in LaTeX text mode (so that ``\\textbf`` makes it bold), with
    a true minus sign."""
    if text == "–":
        return "--"
    return text.replace("-", "$-$").replace("+", "$+$")


def _latex_cell(cell: Cell) -> str:
    text = _tex_num(cell.text) if cell.number else tex_escape(cell.text)
    if cell.dagger:
        text += "$^\\dagger$"
    if cell.bold and cell.text != "–":
        text = f"\\textbf{{{text}}}"
    if cell.p is not None and stars(cell.p):
        text += f"$^{{{stars(cell.p)}}}$"
    if cell.ci is not None:
        text += f" {{\\scriptsize [{_tex_num(cell.ci[0])}, {_tex_num(cell.ci[1])}]}}"
    return text


def to_markdown(table: Table) -> str:
    lines = ["| " + " | ".join(table.header) + " |"]
    lines.append("|" + "|".join("---:" if a == "r" else "---" for a in table.align) + "|")
    lines += ["| " + " | ".join(_markdown_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def to_latex(table: Table, comment: str) -> str:
    """A booktabs ``tabular`` with ``comment`` as its first line."""
    header = table.header_tex or [tex_escape(h) for h in table.header]
    lines = [
        comment,
        r"\begin{tabular}{" + "".join(table.align) + "}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
    ]
    for i, row in enumerate(table.rows):
        if i in table.groups:
            lines.append(r"\midrule")
        lines.append(" & ".join(_latex_cell(c) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def _header(column: str, tex: bool) -> str:
    entry = metric(column)
    if tex:
        arrow = r"$\downarrow$" if entry.lower_is_better else r"$\uparrow$"
        return f"{tex_escape(entry.header)} {arrow}"
    return f"{entry.header} {entry.arrow}"


def _blocks(keys: Sequence[str]) -> list[int]:
    """Row indices where a new block of equal ``keys`` starts (not the first)."""
    return [i for i in range(1, len(keys)) if keys[i] != keys[i - 1]]


# --------------------------------------------------------------------------- summary


def summary_columns(summary: pd.DataFrame) -> list[str]:
    columns = [c for c in ALL_COLUMNS if c in summary.columns]
    if TIME.column in summary.columns:
        columns.append(TIME.column)
    return columns


def summary_table(summary: pd.DataFrame) -> Table:
    """The metrics table: each metric's mean with its interval, the best value of
    each column within each model in bold (among :func:`rankable` rows)."""
    columns = summary_columns(summary)
    flagged = best.flagged(summary)
    ok = rankable(summary)
    bold = np.zeros((len(summary), len(columns)), dtype=bool)
    for model in dict.fromkeys(summary["model"]):
        where = np.flatnonzero((summary["model"] == model).to_numpy() & ok)
        for j, column in enumerate(columns):
            values = summary[column].to_numpy(dtype=float)[where]
            bold[where, j] = best_mask(values, metric(column).lower_is_better)
    rows = []
    models = [str(m) for m in summary["model"]]
    for i, record in enumerate(summary.to_dict("records")):
        first = i == 0 or models[i] != models[i - 1]
        cells = [
            Cell(models[i] if first else "", number=False),
            Cell(str(record["method"]), dagger=bool(flagged[i])),
            Cell(str(int(record["n_images"])), number=True),
        ]
        for j, column in enumerate(columns):
            low = record.get(f"{column}_ci_low", np.nan)
            high = record.get(f"{column}_ci_high", np.nan)
            has_ci = low is not None and np.isfinite(low) and np.isfinite(high)
            cells.append(
                Cell(
                    fmt(record[column]),
                    number=True,
                    bold=bool(bold[i, j]),
                    ci=(fmt(low), fmt(high)) if has_ci else None,
                )
            )
        rows.append(cells)
    return Table(
        header=["model", "method", "n"] + [_header(c, tex=False) for c in columns],
        header_tex=["model", "method", "$n$"] + [_header(c, tex=True) for c in columns],
        rows=rows,
        align=["l", "l"] + ["r"] * (len(columns) + 1),
        groups=_blocks(models),
    )


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


def models_table(models: pd.DataFrame) -> Table:
    rows = []
    for row in models.itertuples(index=False):
        cells = []
        for column, value in zip(models.columns, row, strict=True):
            if column == "grad_cosine":
                cells.append(Cell(fmt(value, 3), number=True))
            elif column in ("test_accuracy", "train_seconds"):
                cells.append(Cell(fmt(value, 1), number=True))
            else:
                cells.append(Cell("" if value is None else str(value)))
        rows.append(cells)
    return Table(
        header=[MODEL_COLUMNS.get(c, c) for c in models.columns],
        rows=rows,
        align=["l" if c in ("model", "kind") else "r" for c in models.columns],
        groups=[],
    )


MODELS_CAPTION = (
    "Test accuracy on the whole test split. Grad. cosine: mean cosine similarity between "
    "the standard input gradient and the guided-backpropagation gradient of the "
    "ground-truth logit on a fixed held-out batch, after the last epoch (what "
    "gradient-aligned training raises). Trainable: parameters that training updated "
    "(a CA-Stream model trains its stream only)."
)


def verdicts_table(verdicts: pd.DataFrame) -> Table:
    rows = [
        [
            Cell(str(v.model)),
            Cell(str(v.method)),
            Cell(fmt(v.min_spearman, 3), number=True),
            Cell(fmt(v.final_spearman, 3), number=True),
            Cell("† model-independent" if v.model_independent else "depends on the model"),
        ]
        for v in verdicts.itertuples(index=False)
    ]
    return Table(
        header=["model", "method", "min. ρ", "ρ, all layers random", "verdict"],
        rows=rows,
        align=["l", "l", "r", "r", "l"],
        groups=[],
    )


RANKS_TITLE = "## Ranks across metrics"


def _ordered_ranks(ranks: pd.DataFrame) -> pd.DataFrame:
    """The rank table in its printed order: models as they come, within each model the
    methods by mean rank (best first; ties keep their order)."""
    order = {m: i for i, m in enumerate(dict.fromkeys(ranks["model"]))}
    keyed = ranks.assign(_model=ranks["model"].map(order))
    keyed = keyed.sort_values(["_model", "mean_rank"], kind="stable", na_position="last")
    return keyed.drop(columns="_model").reset_index(drop=True)


def rank_columns(ranks: pd.DataFrame) -> list[str]:
    """The metrics with a ``rank_<metric>`` column, in the metric table's order."""
    return [c for c in ALL_COLUMNS if f"rank_{c}" in ranks.columns]


def ranks_table(ranks: pd.DataFrame) -> Table:
    """The rank table: per model, each method's median and mean rank (with its
    interval) and its rank on every metric; sanity baselines in italics, flagged
    methods †."""
    ranks = _ordered_ranks(ranks)
    columns = rank_columns(ranks)
    marked = best.flagged(ranks)
    models = [str(m) for m in ranks["model"]]
    rows = []
    for i, record in enumerate(ranks.to_dict("records")):
        first = i == 0 or models[i] != models[i - 1]
        method = str(record["method"])
        low, high = record["mean_rank_ci_low"], record["mean_rank_ci_high"]
        cells = [
            Cell(models[i] if first else ""),
            Cell(
                f"*{method}*"
                if record.get("sanity_baseline", method in SANITY_BASELINES)
                else method,
                dagger=bool(marked[i]),
            ),
            Cell(fmt(record["median_rank"]), number=True),
            Cell(
                fmt(record["mean_rank"], 2),
                number=True,
                ci=(fmt(low, 2), fmt(high, 2)) if np.isfinite([low, high]).all() else None,
            ),
        ]
        cells += [Cell(fmt(record.get(f"rank_{c}", np.nan)), number=True) for c in columns]
        rows.append(cells)
    return Table(
        header=["model", "method", "median rank", "mean rank"]
        + [_header(c, tex=False) for c in columns],
        rows=rows,
        align=["l", "l"] + ["r"] * (len(columns) + 2),
        groups=_blocks(models),
    )


def rank_section(
    ranks: pd.DataFrame,
    confidence: float,
    resamples: int,
    excluded: Sequence[tuple[str, str]] = (),
) -> list[str]:
    """The Markdown section of the rank table (:mod:`cambench.summary.ranks`): how to
    read it, the table, and the pairs left out of it (``excluded``)."""
    if ranks.empty:
        return []
    present = set(ranks["method"].astype(str))
    baselines = ", ".join(f"*{m}*" for m in SANITY_BASELINES if m in present)
    marked = f"Sanity baselines ({baselines}) and methods" if baselines else "Methods"
    text = [
        RANKS_TITLE,
        "",
        "Per model, each method's rank on each metric of the table above (1 = best in "
        "the metric's direction; methods that tie share their average rank), then its "
        "median and mean rank over the metrics. In brackets, the mean rank's "
        f"{100 * confidence:g} % percentile-bootstrap interval over the images "
        f"({resamples} resamples: each redraws the images, the same for every method, "
        "recomputes the means and ranks again). Methods are sorted by mean rank. "
        f"{marked} the randomization check flags † are ranked but marked: a method "
        "ranked near or below them explains the model no better than they do. Ranks "
        "compare methods within one model only; the time per image is not ranked.",
        "",
        to_markdown(ranks_table(ranks)),
        "",
    ]
    if excluded:
        pairs = ", ".join(f"{model} × {method}" for model, method in excluded)
        text += [
            f"Not ranked (degenerate maps, see the warning above): {pairs}.",
            "",
        ]
    return text


def data_randomization_table(results: pd.DataFrame) -> Table:
    """One row per model × method of the data randomization check: the mean Spearman
    correlation of the maps (with its interval), of the raw scores with and without
    absolute values, the SSIM, and the verdict."""
    rows = []
    for r in results.to_dict("records"):
        ci = (fmt(r["spearman_ci_low"], 3), fmt(r["spearman_ci_high"], 3))
        rows.append(
            [
                Cell(str(r["model"])),
                Cell(str(r["method"]), dagger=bool(r["data_independent"])),
                Cell(fmt(r["spearman"], 3), number=True, ci=ci),
                Cell(fmt(r["spearman_abs"], 3), number=True),
                Cell(fmt(r["spearman_signed"], 3), number=True),
                Cell(fmt(r["ssim"], 3), number=True),
                Cell("† data-independent" if r["data_independent"] else "depends on the data"),
            ]
        )
    return Table(
        header=["model", "method", "ρ maps", "ρ abs. scores", "ρ scores", "SSIM", "verdict"],
        rows=rows,
        align=["l", "l", "r", "r", "r", "r", "l"],
        groups=[],
    )


def data_randomization_text(results: pd.DataFrame) -> list[str]:
    """The data randomization section of summary.md: what was run (every setting and
    seed, the retrained model's accuracies) and the table."""
    first = results.iloc[0]
    lines = [
        "## Sanity check: data randomization",
        "",
        "Each method's maps of the first test images on the trained model and on the same "
        "architecture trained with the same recipe on permuted training labels (Adebayo "
        "et al., 2018), both explaining the class chosen on the trained model. ρ maps: "
        "Spearman rank correlation of the two maps (mean over the images, with its "
        f"{100 * float(first['bootstrap_confidence']):g} % bootstrap interval over the "
        f"images, {int(first['bootstrap_resamples'])} resamples); ρ abs. scores and ρ "
        "scores: of the method's raw scores before ReLU and normalization, with and "
        "without absolute values; SSIM: Gaussian-window structural similarity of the "
        f"maps. A method whose ρ maps is at or above {float(first['threshold']):g} (the "
        "parameter check's threshold) does not depend on what the model learned: it is "
        "flagged † above and here.",
        "",
    ]
    for model, group in results.groupby("model", sort=False):
        r = group.iloc[0]
        lines.append(
            f"- {model}: retrained on labels permuted with seed {int(r['permutation_seed'])}"
            f" for {int(r['epochs'])} epochs; accuracy on the permuted training labels "
            f"{100 * float(r['randomized_train_acc']):.1f} %, on the test split "
            f"{100 * float(r['randomized_test_acc']):.1f} % (expected near chance); "
            f"{int(r['n_images'])} images, classes: "
            f"{r['target']}."
        )
    lines += ["", to_markdown(data_randomization_table(results)), ""]
    return lines


#: The optional checks of the sanity stage (cambench.jobs.sanity.run_checks): the
#: column header of each and what its value is.
SANITY_CHECK_COLUMNS = {
    "random_logit": ("random logit: SSIM", "SSIM of the map of the class and of a random other class"),
    "smooth_mprt": ("smooth MPRT: ρ", "Spearman ρ of the noise-averaged maps before and after the "
                    "whole cascade is randomized"),
    "efficient_mprt": ("efficient MPRT: entropy rise", "relative rise of the maps' discrete "
                       "entropy when every layer is randomized"),
}  # fmt: skip


def sanity_checks_text(results: pd.DataFrame) -> list[str]:
    """The section of summary.md for the sanity stage's optional checks (random logit,
    smooth and efficient MPRT): per model × method, each check's mean over the images
    with its interval (for smooth MPRT, the last step of the cascade: every block
    randomized), and each check's settings."""
    tests = [t for t in SANITY_CHECK_COLUMNS if t in set(results["test"])]
    last = results.sort_values("step").groupby(["model", "method", "test"], sort=False).tail(1)
    rows = []
    for (model, method), group in last.groupby(["model", "method"], sort=False):
        by_test = {r["test"]: r for r in group.to_dict("records")}
        cells = [Cell(str(model)), Cell(str(method))]
        for test in tests:
            r = by_test.get(test)
            cells.append(
                Cell("–")
                if r is None
                else Cell(
                    fmt(r["value"], 3), number=True, ci=(fmt(r["ci_low"], 3), fmt(r["ci_high"], 3))
                )
            )
        rows.append(cells)
    table = Table(
        header=["model", "method", *(SANITY_CHECK_COLUMNS[t][0] for t in tests)],
        rows=rows,
        align=["l", "l", *("r" for _ in tests)],
        groups=[],
    )
    settings = results.drop_duplicates("test").set_index("test")["settings"]
    described = "; ".join(
        f"{SANITY_CHECK_COLUMNS[t][0].split(':')[0]}: {SANITY_CHECK_COLUMNS[t][1]} "
        f"(settings {settings[t]})"
        for t in tests
    )
    n = int(results["n_images"].max())
    return [
        "## Sanity checks: random logit, smooth and efficient MPRT",
        "",
        f"Means over the first {n} test images, with bootstrap intervals. {described}. "
        "A method that explains the model and the class has a low SSIM and a low ρ and a "
        "high entropy rise; a high SSIM or ρ says the map ignores the class or the weights "
        "(docs/metrics.md, Sanity checks).",
        "",
        to_markdown(table),
        "",
    ]


def summary_markdown(
    summary: pd.DataFrame,
    models: pd.DataFrame,
    verdicts: pd.DataFrame,
    experiment: str,
    protocols: Sequence[str],
    confidence: float,
    resamples: int,
    tolerance: float | None,
    warnings: Sequence[str] = (),
    notes: Sequence[str] = (),
    ranks: Sequence[str] = (),
    data_randomization: pd.DataFrame | None = None,
    sanity_checks: pd.DataFrame | None = None,
) -> str:
    """The Markdown summary: warnings, models, the metrics table (``notes`` below it),
    the rank section ``ranks`` (:func:`rank_section`'s lines) and the randomization
    sanity checks (parameters; data, when ``data_randomization`` holds its results; the
    random-logit and MPRT checks, when ``sanity_checks`` holds theirs)."""
    present = set(registered_methods(summary))  # a variant's label: the method it ran
    baselines = [m for m in SANITY_BASELINES if m not in REFERENCE_BASELINES or m in present]
    if "mask_oracle" in present:
        notes = [
            "mask_oracle is the object mask itself (a ground-truth reference, the upper "
            "bound for localization): a sanity baseline, never bold.",
            *notes,
        ]
    text = [f"# cambench summary{': ' + experiment if experiment else ''}", ""]
    for warning in warnings:
        text += [f"> **Warning:** {warning}", ""]
    if protocols:
        text += [f"**Insertion/deletion protocol:** {'; '.join(protocols)}.", ""]
    if not models.empty:
        text += ["## Models", "", MODELS_CAPTION, "", to_markdown(models_table(models)), ""]
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
        "better; the best value of each column within each model is **bold**, among the "
        f"methods that explain the model (never the sanity baselines "
        f"{', '.join(baselines)}, nor a method the randomization check flags †).",
        "",
        to_markdown(summary_table(summary)),
        "",
    ]
    if notes:
        text += [*(f"- {note}" for note in notes), ""]
    text += list(ranks)
    if not verdicts.empty:
        text += [
            "## Sanity check: model parameter randomization",
            "",
            "Spearman rank correlation between each method's maps on the trained model and on "
            "copies whose layers are re-initialized from the output down (Adebayo et al., "
            "2018), mean over the images. A method whose correlation stays at or above the "
            "threshold through the whole cascade does not depend on the model: it is flagged "
            "† above and here.",
            "",
            to_markdown(verdicts_table(verdicts)),
            "",
        ]
    if data_randomization is not None and not data_randomization.empty:
        text += data_randomization_text(data_randomization)
    if sanity_checks is not None and not sanity_checks.empty:
        text += sanity_checks_text(sanity_checks)
    return "\n".join(text)


def summary_latex(summary: pd.DataFrame, confidence: float) -> str:
    """The metrics table as a LaTeX ``tabular`` (booktabs), best per model in bold."""
    comment = (
        "% cambench summary table: means (percent) with "
        f"{100 * confidence:g}% bootstrap intervals; needs \\usepackage{{booktabs}}"
    )
    text = to_latex(summary_table(summary), comment)
    if summary.get("model_independent", pd.Series(dtype=bool)).fillna(False).astype(bool).any():
        text = text[:-1] + "% $^\\dagger$: model-independent in the randomization sanity check\n"
    if summary.get("data_independent", pd.Series(dtype=bool)).fillna(False).astype(bool).any():
        text = text[:-1] + "% $^\\dagger$: data-independent in the data randomization check\n"
    return text


# ------------------------------------------------------------------------ comparison


COMPARISON_INTRO = (
    "Paired over the same test images (joined on their index): Δ = model − reference, "
    "mean over the images in percentage points, with its bootstrap confidence interval "
    "in brackets and the two-sided paired Wilcoxon signed-rank p-value (no correction "
    "for multiple comparisons). ↓: a negative Δ is an improvement; ↑: a positive Δ is."
)


def _difference_cell(row: pd.Series | None) -> Cell:
    if row is None:
        return Cell("–", number=True)
    return Cell(
        fmt(row["difference"], sign=True),
        number=True,
        ci=(fmt(row["ci_low"]), fmt(row["ci_high"])),
        p=float(row["wilcoxon_p"]),
    )


def comparison_tables(comparison: pd.DataFrame) -> list[tuple[tuple[str, str, str], Table]]:
    """One table per (model, reference, relation): a row per method, a Δ column per
    metric."""
    metrics = list(dict.fromkeys(comparison["metric"]))
    tables = []
    for key, block in comparison.groupby(["model", "reference", "relation"], sort=False):
        rows = []
        for method, group in block.groupby("method", sort=False):
            by_metric = group.set_index("metric")
            rows.append(
                [Cell(str(method)), Cell(str(int(group["n_pairs"].max())), number=True)]
                + [
                    _difference_cell(by_metric.loc[m] if m in by_metric.index else None)
                    for m in metrics
                ]
            )
        header = ["method", "n"] + [f"Δ {_header(m, tex=False)}" for m in metrics]
        tables.append((key, Table(header, rows, ["l"] + ["r"] * (len(header) - 1), [])))
    return tables


def comparison_markdown(comparison: pd.DataFrame, note: str, experiment: str) -> str:
    text = [f"# cambench model comparisons{': ' + experiment if experiment else ''}", ""]
    if comparison.empty:
        return "\n".join([*text, note, ""])
    text += [COMPARISON_INTRO, ""]
    for (model, reference, relation), table in comparison_tables(comparison):
        text += [f"## {model} vs {reference} ({relation})", "", to_markdown(table), ""]
    return "\n".join(text)


def comparison_latex(comparison: pd.DataFrame, note: str) -> str:
    """All comparisons in one ``tabular``: a block per (model, reference)."""
    present = set(comparison["metric"]) if "metric" in comparison.columns else set()
    columns = [m.column for m in METRICS if m.column in present or m.default]
    header = ["model vs reference", "method"] + [
        rf"$\Delta$ {_header(m, tex=True)}" for m in columns
    ]
    rows, keys = [], []
    for (model, reference, _), block in comparison.groupby(
        ["model", "reference", "relation"], sort=False
    ):
        label = f"{model} vs {reference}"
        for method, group in block.groupby("method", sort=False):
            by_metric = group.set_index("metric")
            rows.append(
                [Cell(label if not keys or keys[-1] != label else ""), Cell(str(method))]
                + [
                    _difference_cell(by_metric.loc[m] if m in by_metric.index else None)
                    for m in columns
                ]
            )
            keys.append(label)
    if comparison.empty:
        rows = []
    table = Table(
        header=header,
        header_tex=header,
        rows=rows,
        align=["l", "l"] + ["r"] * len(columns),
        groups=_blocks(keys),
    )
    comment = (
        "% cambench model comparisons: paired mean difference (percentage points) with its "
        "bootstrap interval; * p<0.05, ** p<0.01, *** p<0.001 (paired Wilcoxon signed-rank)"
    )
    text = to_latex(table, comment)
    if comparison.empty:
        empty = rf"\multicolumn{{{len(header)}}}{{l}}{{{tex_escape(note)}}} \\"
        text = text.replace("\\midrule\n\\bottomrule", f"\\midrule\n{empty}\n\\bottomrule")
    return text


def comparison_note(present: Sequence[str]) -> str:
    """Why there is no comparison, in words."""
    if len(present) < 2:
        return f"Only one model ({', '.join(present) or 'none'}): there is no model comparison."
    return (
        "No model has a reference to be compared with (a castream model is compared with "
        "its base, a gradalign model with the first baseline model)."
    )


def appended_sections(paths: Sequence[str | os.PathLike]) -> str:
    """The Markdown sections other jobs wrote (the ROAR/KAR section of
    ``cambench roar-aggregate``), each after a blank line; empty without any, so a
    summary without them is unchanged."""
    return "".join("\n" + Path(path).read_text(encoding="utf-8") for path in paths)
