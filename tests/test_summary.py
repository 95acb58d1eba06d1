"""Tests of cambench.summary and the summarize job: summary and model-comparison
tables (CSV, Markdown, LaTeX)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cambench.jobs import summarize
from cambench.metric_table import COLUMNS as METRIC_COLUMNS
from cambench.metrics.statistics import bootstrap_mean_ci, wilcoxon_signed_rank
from cambench.specs import ModelSpec, reference_pairs
from cambench.summary import compare_models, duplicate_images, model_table, summarize_metrics
from cambench.summary.render import models_table, to_markdown
from cambench.table_io import read_json

N = 24
PROTOCOL = json.dumps(
    {
        "protocol": "custom",
        "steps": 8,
        "target": "label",
        "insertion_substrate": "blur",
        "deletion_substrate": "black",
        "blur_sigma": 5.0,
        "blur_kernel": 11,
    }
)


def _spec(name: str, kind: str, base: str | None = None) -> ModelSpec:
    return ModelSpec(name, kind, {"kind": kind}, "resnet_small", base, "", 1)


MODELS = {
    "baseline": _spec("baseline", "baseline"),
    "castream": _spec("castream", "castream", "baseline"),
    "gradalign": _spec("gradalign", "gradalign"),
}
STATS = {"resamples": 200, "confidence": 0.95, "seed": 3}


def write_summary(csvs, out_dir, pairs=(), randomization=(), histories=(), statistics=STATS):
    """The summarize job with every output in ``out_dir``."""
    out = {k: out_dir / f"summary.{k}" for k in ("csv", "md", "tex")}
    cmp = {k: out_dir / f"comparison.{k}" for k in ("csv", "md", "tex")}
    summary = summarize.run(
        csvs,
        list(histories),
        list(randomization),
        list(pairs),
        statistics,
        "demo",
        out["csv"],
        out["md"],
        out["tex"],
        cmp["csv"],
        cmp["md"],
        cmp["tex"],
    )
    return summary, out, cmp


def per_image(model: str, method: str, shift: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"model": model, "method": method, "index": np.arange(N)})
    for k, column in enumerate(METRIC_COLUMNS):
        frame[column] = np.clip(rng.normal(40 + 5 * k, 10, N) + shift, 0, 100)
    frame.loc[0, "iou"] = np.nan  # an image without an object
    frame["seconds"] = 0.002
    frame["pointing_tolerance"] = 0.0
    frame["protocol"] = PROTOCOL
    return frame


@pytest.fixture
def csvs(tmp_path):
    paths = []
    for m, (model, shift) in enumerate([("baseline", 0.0), ("castream", 3.0), ("gradalign", -2.0)]):
        for k, (method, offset) in enumerate(
            [("gradcam", 30.0), ("gradcampp", 15.0), ("fakecam", 0.0)]
        ):
            frame = per_image(model, method, shift + offset, seed=10 * m + k)
            for shard, rows in enumerate(np.array_split(np.arange(N), 2)):
                path = tmp_path / "metrics" / model / method / f"shard-{shard}.csv"
                path.parent.mkdir(parents=True, exist_ok=True)
                frame.iloc[rows].to_csv(path, index=False)
                paths.append(path)
    return paths


def test_summary_means_intervals_and_protocol(csvs):
    frame = pd.concat([pd.read_csv(p) for p in csvs], ignore_index=True)
    summary = summarize_metrics(frame, resamples=500, confidence=0.95, seed=1)
    assert len(summary) == 9 and (summary["n_images"] == N).all()
    row = summary[(summary["model"] == "castream") & (summary["method"] == "gradcam")].iloc[0]
    group = frame[(frame["model"] == "castream") & (frame["method"] == "gradcam")]
    for column in METRIC_COLUMNS:
        mean, low, high = bootstrap_mean_ci(group[column].to_numpy(), 500, 0.95, 1)
        assert row[column] == pytest.approx(np.nanmean(group[column]))
        assert row[f"{column}_ci_low"] <= row[column] <= row[f"{column}_ci_high"]
    # the columns share their resamples: the 1-d interval of a column without NaN is the
    # same as in the table
    mean, low, high = bootstrap_mean_ci(group["AD"].to_numpy(), 500, 0.95, 1)
    assert (row["AD_ci_low"], row["AD_ci_high"]) == pytest.approx((low, high))
    assert row["ms_per_image"] == pytest.approx(2.0)
    assert row["protocol"] == "custom"


def test_reference_pairs():
    assert reference_pairs(MODELS) == [
        ("castream", "baseline", "castream vs its base"),
        ("gradalign", "baseline", "gradalign vs the first baseline"),
    ]
    assert reference_pairs({"a": _spec("a", "gradalign")}) == []
    two = {n: _spec(n, k) for n, k in (("b1", "baseline"), ("b2", "baseline"), ("g", "gradalign"))}
    assert reference_pairs(two) == [("g", "b1", "gradalign vs the first baseline")]


def test_comparison_is_paired_on_index(csvs):
    frame = pd.concat([pd.read_csv(p) for p in csvs], ignore_index=True)
    # shuffle the rows of one model: the pairing must follow `index`, not the row order
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    table = compare_models(frame, reference_pairs(MODELS), resamples=400, confidence=0.95, seed=0)
    assert len(table) == 2 * 3 * len(METRIC_COLUMNS)
    row = table[
        (table["model"] == "castream") & (table["method"] == "gradcam") & (table["metric"] == "AG")
    ].iloc[0]
    a = frame[(frame["model"] == "castream") & (frame["method"] == "gradcam")].set_index("index")
    b = frame[(frame["model"] == "baseline") & (frame["method"] == "gradcam")].set_index("index")
    d = (a["AG"] - b["AG"].reindex(a.index)).to_numpy()
    assert row["n_pairs"] == N
    assert row["difference"] == pytest.approx(d.mean())
    assert row["wilcoxon_p"] == pytest.approx(wilcoxon_signed_rank(d)[1])
    assert row["ci_low"] <= row["difference"] <= row["ci_high"]
    iou = table[(table["metric"] == "iou")]
    assert (iou["n_pairs"] == N - 1).all()  # the image without an object is left out


def _bold_md(text: str) -> list[str]:
    import re

    return re.findall(r"\*\*([-0-9.]+)\*\*", text)


def test_write_summary_tables(csvs, tmp_path):
    random_csv = tmp_path / "sanity.csv"
    pd.DataFrame(
        {
            "model": "baseline",
            "method": "fakecam",
            "step": [0, 1, 2],
            "randomized": ["none", "fc", "layer4"],
            "spearman": [1.0, 1.0, 1.0],
            "model_independent": True,
        }
    ).to_csv(random_csv, index=False)
    summary, out, cmp = write_summary(
        csvs, tmp_path, pairs=reference_pairs(MODELS), randomization=[random_csv]
    )
    md = out["md"].read_text()
    tex = out["tex"].read_text()
    # best per model and column among the methods that explain the model: gradcam has
    # +15 over gradcampp on every metric, so it is best on the "higher" columns and
    # gradcampp on the "lower" ones (AD, deletion); fakecam (a sanity baseline, lower
    # still on AD) is never bold
    for model in ("baseline", "castream", "gradalign"):
        rows = summary[summary["model"] == model].set_index("method")
        best_ag = f"{rows.loc['gradcam', 'AG']:.1f}"
        best_ad = f"{rows.loc['gradcampp', 'AD']:.1f}"
        assert f"**{best_ag}**" in md and f"**{best_ad}**" in md
        assert f"\\textbf{{{best_ag}}}" in tex and f"\\textbf{{{best_ad}}}" in tex
        fake_ad = f"{rows.loc['fakecam', 'AD']:.1f}"
        assert f"**{fake_ad}**" not in md
    # one bold value per model and column (no ties in this data); T: both rankable
    # methods have equal times, and a column where every value ties has no bold
    n_columns = len(METRIC_COLUMNS) + 1
    assert len(_bold_md(md)) == 3 * (n_columns - 1)
    assert "\\begin{tabular}" in tex and "\\toprule" in tex and "\\bottomrule" in tex
    assert "custom: 8 steps" in md
    assert "fakecam†" in md and "† model-independent" in md
    saved = pd.read_csv(out["csv"])
    assert "AD_ci_low" in saved.columns and "iou" in saved.columns
    assert saved.loc[saved["method"] == "fakecam", "model_independent"].iloc[0] in (True, "True")
    comparison = pd.read_csv(cmp["csv"])
    assert set(comparison["model"]) == {"castream", "gradalign"}
    assert set(comparison["reference"]) == {"baseline"}
    cmd = cmp["md"].read_text()
    assert "## castream vs baseline" in cmd and "## gradalign vs baseline" in cmd
    assert "p = " in cmd or "p < 0.001" in cmd
    ctex = cmp["tex"].read_text()
    assert "castream vs baseline" in ctex and "\\scriptsize" in ctex


def test_a_flagged_method_is_never_bold(csvs, tmp_path):
    """gradcam, flagged model-independent by the randomization check, loses its bold."""
    flagged = tmp_path / "sanity.csv"
    pd.DataFrame(
        {
            "model": "baseline",
            "method": "gradcam",
            "step": [0, 1],
            "randomized": ["none", "fc"],
            "spearman": [1.0, 1.0],
            "model_independent": True,
        }
    ).to_csv(flagged, index=False)
    summary, out, _ = write_summary(csvs, tmp_path, randomization=[flagged])
    rows = summary[summary["model"] == "baseline"].set_index("method")
    md = out["md"].read_text()
    assert (
        f"**{rows.loc['gradcam', 'AG']:.1f}**"
        not in md.split("## Sanity")[0].split("| castream")[0]
    )


def test_single_model_comparison_is_an_empty_table_with_a_note(csvs, tmp_path):
    only = [p for p in csvs if "/baseline/" in str(p)]
    _, _, cmp = write_summary(only, tmp_path, pairs=reference_pairs(MODELS))
    assert pd.read_csv(cmp["csv"]).empty
    assert "Only one model (baseline)" in cmp["md"].read_text()
    assert "Only one model" in cmp["tex"].read_text()
    # two models without a reference relation: empty too, with the reason
    _, _, cmp = write_summary(csvs, tmp_path, pairs=[])
    assert "No model has a reference" in cmp["md"].read_text()


def test_missing_columns_name_them(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"model": ["m"], "method": ["x"], "index": [0], "AD": [1.0]}).to_csv(
        path, index=False
    )
    with pytest.raises(ValueError, match="iou"):
        write_summary([path], tmp_path)


def test_a_shard_copied_over_another_is_refused(csvs, tmp_path):
    """Images counted twice, or a method scored on other images than the model's
    others, make the summary fail instead of averaging the wrong images."""
    frame = pd.concat([pd.read_csv(p) for p in csvs], ignore_index=True)
    assert duplicate_images(frame) == []
    gradcam = (frame["model"] == "baseline") & (frame["method"] == "gradcam")
    twice = frame.copy()
    twice.loc[gradcam & (twice["index"] >= N // 2), "index"] -= N // 2  # shard 0 twice
    problems = duplicate_images(twice)
    assert any("baseline × gradcam: image(s) [0, 1," in p for p in problems)
    shard0 = [p for p in csvs if "/baseline/gradcam/shard-0" in str(p)][0]
    shard1 = shard0.with_name("shard-1.csv")
    shard1.write_bytes(shard0.read_bytes())
    with pytest.raises(ValueError, match="counted more than once"):
        write_summary(csvs, tmp_path)


def test_a_model_near_chance_is_flagged(csvs, tmp_path):
    history = tmp_path / "baseline.json"
    history.write_text(
        json.dumps(
            {
                "model": "baseline",
                "kind": "baseline",
                "epochs": [],
                "test_acc": 0.275,
                "num_classes": 4,
            }
        )
    )
    good = tmp_path / "castream.json"
    good.write_text(
        json.dumps(
            {
                "model": "castream",
                "kind": "castream",
                "epochs": [],
                "test_acc": 0.9,
                "num_classes": 4,
            }
        )
    )
    _, out, _ = write_summary(csvs, tmp_path, histories=[history, good])
    md = out["md"].read_text()
    assert (
        "**Warning:** model baseline has 27.5 % test accuracy, within 10 points of chance (25.0 % on 4 classes)"
        in md
    )
    assert "model castream has" not in md


def test_models_table_reads_the_histories(tmp_path):
    def history(name, kind, epochs, total, trainable):
        return {
            "model": name,
            "kind": kind,
            "epochs": [
                {"epoch": i + 1, "test_acc": acc, "grad_cosine": cos}
                for i, (acc, cos) in enumerate(epochs)
            ],
            "test_acc": epochs[-1][0],
            "parameters": total,
            "trainable_parameters": trainable,
            "seconds": 12.25,
        }

    paths = []
    for name, kind, epochs, trainable in (
        ("baseline", "baseline", [(0.5, 0.1), (0.9125, 0.2)], 1000),
        ("ca", "castream", [(0.875, 0.15)], 40),
    ):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(history(name, kind, epochs, 1040, trainable)))
    table = model_table([read_json(p, "training history") for p in paths])
    assert table["epochs"].tolist() == [2, 1]
    assert table["test_accuracy"].tolist() == [91.25, 87.5]
    assert table["grad_cosine"].tolist() == [0.2, 0.15]  # the last epoch's
    assert table["trainable_parameters"].tolist() == [1000, 40]
    md = to_markdown(models_table(table))
    assert "| baseline | baseline | 2 | 91.2 | 0.200 | 1040 | 1000 | 12.2 |" in md
    assert "| ca | castream | 1 | 87.5 | 0.150 | 1040 | 40 | 12.2 |" in md
    assert "grad. cosine" in md
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json: cannot read training history"):
        read_json(tmp_path / "bad.json", "training history")


def test_p_values_print_as_in_papers():
    from cambench.summary import format_p

    assert format_p(0.0004) == "p < 0.001"
    assert format_p(0.0312) == "p = 0.031"
    assert format_p(float("nan")) == "p = –"


def test_the_tables_bold_no_value_of_a_column_where_every_method_ties():
    """AD ties for both methods that may be bold (fakecam, a sanity baseline, is lower
    still): no AD value is bold; AG is gradcam's, not the higher baseline's."""
    from cambench.summary.render import summary_table

    summary = pd.DataFrame(
        {
            "model": "m",
            "method": ["gradcam", "layercam", "fakecam"],
            "n_images": N,
            "AD": [12.04, 11.96, 0.0],  # 12.0 for both at the printed precision
            "AG": [30.0, 20.0, 50.0],
        }
    )
    rows = summary_table(summary).rows
    ad, ag = 3, 4  # model, method, n, then the metrics in table order
    assert [row[ad].bold for row in rows] == [False, False, False]
    assert [row[ag].bold for row in rows] == [True, False, False]


def test_the_sanity_stages_optional_checks_are_a_section_of_the_summary():
    """Random logit and efficient MPRT one step each, smooth MPRT a cascade whose last
    step (every block randomized) is the one shown; each value with its interval and
    each check's settings named."""
    from cambench.summary.render import sanity_checks_text

    def row(method, test, step, value, settings):
        return {
            "model": "baseline", "method": method, "test": test, "step": step,
            "randomized": "", "value": value, "ci_low": value - 0.1, "ci_high": value + 0.1,
            "n_images": 8, "settings": settings,
        }  # fmt: skip

    frame = pd.DataFrame(
        [
            row("gradcam", "random_logit", 0, 0.25, "{}"),
            row("gradcam", "smooth_mprt", 0, 0.9, '{"n_samples": 4}'),
            row("gradcam", "smooth_mprt", 1, 0.125, '{"n_samples": 4}'),
            row("gradcam", "efficient_mprt", 0, 0.5, '{"n_bins": 10}'),
            row("fakecam", "random_logit", 0, 1.0, "{}"),
            row("fakecam", "smooth_mprt", 1, 1.0, '{"n_samples": 4}'),
            row("fakecam", "smooth_mprt", 0, 1.0, '{"n_samples": 4}'),
            row("fakecam", "efficient_mprt", 0, 0.0, '{"n_bins": 10}'),
        ]
    )
    text = "\n".join(sanity_checks_text(frame))
    assert text.startswith("## Sanity checks: random logit, smooth and efficient MPRT")
    assert "first 8 test images" in text and '{"n_samples": 4}' in text and '{"n_bins": 10}' in text
    lines = [line for line in text.splitlines() if line.startswith("| baseline")]
    assert len(lines) == 2
    gradcam = [c.strip() for c in lines[0].strip("|").split("|")]
    # the last smooth-MPRT step (0.125), not the first (0.9)
    assert gradcam[:2] == ["baseline", "gradcam"]
    assert [c.split()[0] for c in gradcam[2:]] == ["0.250", "0.125", "0.500"]
    assert "[0.025, 0.225]" in gradcam[3]
