"""The rank table in the summarize job (summary.md's section, ranks.csv) and its
heatmap figure, against ranks computed here with scipy's rankdata."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

from cambench.jobs import plot as plot_job
from cambench.jobs import summarize
from cambench.metric_table import COLUMNS, metric
from cambench.plots.ranks import rank_heatmap_figure, read_ranks
from cambench.summary.render import RANKS_TITLE

N = 12
STATS = {"resamples": 50, "confidence": 0.9, "seed": 0}
# method -> (shift of every metric, degenerate maps)
METHODS = {"gradcam": (20.0, 0), "layercam": (10.0, 0), "broken": (30.0, 4), "random": (0.0, 0)}


def _per_image(model: str, method: str, shift: float, degenerate: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"model": model, "method": method, "index": np.arange(N)})
    for column in COLUMNS:
        frame[column] = np.clip(rng.normal(40 + shift, 5, N), 0, 100)
    frame["seconds"] = 0.001
    frame["degenerate"] = [1] * degenerate + [0] * (N - degenerate)
    return frame


@pytest.fixture
def per_image_csvs(tmp_path):
    paths = []
    for m, model in enumerate(("resnet", "vit")):
        for k, (method, (shift, bad)) in enumerate(METHODS.items()):
            path = tmp_path / f"{model}-{method}.csv"
            _per_image(model, method, shift, bad if model == "vit" else 0, 10 * m + k).to_csv(
                path, index=False
            )
            paths.append(path)
    return paths


def _flag_layercam(tmp_path):
    path = tmp_path / "sanity.csv"
    pd.DataFrame(
        {
            "model": "resnet",
            "method": "layercam",
            "step": [0, 1],
            "randomized": ["none", "fc"],
            "spearman": [1.0, 1.0],
            "model_independent": True,
        }
    ).to_csv(path, index=False)
    return path


def _summarize(paths, out, randomization=(), ranks=True):
    names = ("s.csv", "s.md", "s.tex", "c.csv", "c.md", "c.tex")
    files = [out / n for n in names]
    summarize.run(
        paths,
        [],
        list(randomization),
        [],
        STATS,
        "demo",
        *files,
        ranks_csv=out / "ranks.csv" if ranks else None,
    )
    return files


def test_summary_md_has_the_rank_section_and_ranks_csv_its_columns(per_image_csvs, tmp_path):
    files = _summarize(per_image_csvs, tmp_path, randomization=[_flag_layercam(tmp_path)])
    md = files[1].read_text()
    # a section of its own, after the metrics table and before the sanity check
    assert md.index("## Saliency methods") < md.index(RANKS_TITLE) < md.index("## Sanity check")
    section = md[md.index(RANKS_TITLE) : md.index("## Sanity check")]
    assert "| model | method | median rank | mean rank | AD ↓ |" in section
    assert "| *random* |" in section  # the sanity baseline: ranked, in italics
    assert "| layercam† |" in section  # the flagged method: ranked, with its dagger
    assert "Not ranked (degenerate maps, see the warning above): vit × broken." in section
    ranks = pd.read_csv(tmp_path / "ranks.csv")
    assert list(ranks.columns) == [
        "model",
        "method",
        *(f"rank_{c}" for c in COLUMNS),
        "median_rank",
        "mean_rank",
        "mean_rank_ci_low",
        "mean_rank_ci_high",
        "n_metrics",
        "n_images",
        "sanity_baseline",
        "model_independent",
    ]
    pairs = set(zip(ranks["model"], ranks["method"], strict=True))
    assert ("vit", "broken") not in pairs and ("resnet", "broken") in pairs
    marks = ranks.set_index(["model", "method"])
    assert marks.loc[("resnet", "random"), "sanity_baseline"]
    assert marks.loc[("resnet", "layercam"), "model_independent"]
    assert not marks.loc[("vit", "layercam"), "model_independent"]


def test_ranks_equal_rankdata_of_the_means_in_each_metrics_direction(per_image_csvs, tmp_path):
    _summarize(per_image_csvs, tmp_path)
    ranks = pd.read_csv(tmp_path / "ranks.csv").set_index(["model", "method"])
    frame = pd.concat([pd.read_csv(p) for p in per_image_csvs])
    frame = frame[~((frame["model"] == "vit") & (frame["method"] == "broken"))]
    for model, group in frame.groupby("model"):
        means = group.groupby("method", sort=False)[list(COLUMNS)].mean()
        expected = np.stack(
            [
                rankdata(means[c] if metric(c).lower_is_better else -means[c], method="average")
                for c in COLUMNS
            ],
            axis=1,
        )
        got = ranks.loc[[(model, m) for m in means.index], [f"rank_{c}" for c in COLUMNS]]
        np.testing.assert_allclose(got.to_numpy(), expected, atol=1e-4)
        np.testing.assert_allclose(
            ranks.loc[[(model, m) for m in means.index], "mean_rank"], expected.mean(1), atol=1e-4
        )


def test_the_section_lists_methods_by_mean_rank(per_image_csvs, tmp_path):
    files = _summarize(per_image_csvs, tmp_path)
    section = files[1].read_text().split(RANKS_TITLE)[1]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ")][1:]
    means = [float(r[3].split()[0]) for r in rows]
    resnet = means[: len(METHODS)]
    assert resnet == sorted(resnet) and len(rows) == 2 * len(METHODS) - 1


def test_ranks_csv_leaves_the_other_outputs_unchanged(per_image_csvs, tmp_path):
    """The rank table is a new file and a new section: the summary CSV and LaTeX, and the
    Markdown outside the section, are what they were without it."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with_ranks = _summarize(per_image_csvs, tmp_path / "a")
    without = _summarize(per_image_csvs, tmp_path / "b", ranks=False)
    for a, b in zip(with_ranks, without, strict=True):
        if a.name != "s.md":
            assert a.read_bytes() == b.read_bytes(), a.name
    assert not (tmp_path / "b" / "ranks.csv").exists()


def _ranks_csv(path, methods=("gradcam", "layercam", "fakecam")):
    rows = []
    for model, order in (("resnet", [1.0, 2.0, 3.0]), ("vit", [2.5, 2.5, 1.0])):
        for method, rank in zip(methods, order, strict=True):
            rows.append(
                {
                    "model": model,
                    "method": method,
                    "rank_AD": rank,
                    "rank_insertion": 4.0 - rank,
                    "mean_rank": 2.0 + (rank - 2.0) / 10,
                    "n_images": 10,
                    "sanity_baseline": method == "fakecam",
                    "model_independent": method == "layercam" and model == "vit",
                }
            )
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_rank_heatmap_labels_are_the_methods_and_metrics(tmp_path):
    fig = rank_heatmap_figure(_ranks_csv(tmp_path / "ranks.csv"))
    resnet, vit = fig.axes[:2]
    assert resnet.get_title(loc="left").startswith("resnet")
    headers = [t.get_text() for t in resnet.get_xticklabels()]
    assert headers == ["AD\n↓", "Ins.\n↑", "mean\nrank"]
    # rows by mean rank, best on top; the flagged method carries †, the baseline is italic
    assert [t.get_text() for t in resnet.get_yticklabels()] == ["gradcam", "layercam", "fakecam"]
    assert [t.get_text() for t in vit.get_yticklabels()] == ["fakecam", "gradcam", "layercam †"]
    styles = {t.get_text(): t.get_fontstyle() for t in vit.get_yticklabels()}
    assert styles == {"fakecam": "italic", "gradcam": "normal", "layercam †": "normal"}
    # each cell prints the rank of its row and column (image rows top to bottom)
    cells = {
        (round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in vit.texts
    }
    assert cells[(0, 0)] == "1" and cells[(1, 0)] == "2.5" and cells[(0, 1)] == "3"
    assert cells[(0, 2)] == "1.9"


def test_rank_heatmap_through_the_plot_job_and_bad_input(tmp_path):
    out = tmp_path / "rank_heatmap.png"
    plot_job.run("rank_heatmap", [_ranks_csv(tmp_path / "r.csv")], out, "", None, None, None)
    assert out.read_bytes()[:4] == b"\x89PNG" and out.with_suffix(".pdf").is_file()
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"model": ["m"], "method": ["a"], "mean_rank": [1.0]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match=r"bad.csv: no rank_<metric> column"):
        read_ranks(bad)
    with pytest.raises(ValueError, match=r"gone.csv"):
        read_ranks(tmp_path / "gone.csv")
