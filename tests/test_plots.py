"""Tests of cambench.plots: every figure from small fake inputs, and the input checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba

import cambench
from cambench.checksum import seal
from cambench.plots import (
    METHOD_COLORS,
    method_color,
    plot_curves,
    plot_distributions,
    plot_metric_bars,
    plot_randomization,
    plot_saliency_grid,
    plot_summary_heatmap,
    plot_training,
)
from cambench.plots.bars import metric_bars_figure
from cambench.plots.summary_heatmap import METRICS, SUMMARY_COLUMNS, goodness
from cambench.plots.training import training_figure

METHODS = ["gradcam", "scorecam", "random", "some_new_method"]
N, H, W, STEPS = 10, 16, 16, 8


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter that finds the same cambench as this one."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(cambench.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    return result.stdout.strip()


def check_png(path: Path, min_side: int = 150) -> np.ndarray:
    """The PNG exists, reads back as an RGB(A) image of plausible size, no temp file left."""
    assert path.is_file()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert min(image.shape[:2]) >= min_side
    assert max(image.shape[:2]) < 6000
    assert image[..., :3].std() > 0.01  # not blank
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    pdf = path.with_suffix(".pdf")  # every figure has a vector twin
    assert pdf.is_file() and pdf.read_bytes()[:5] == b"%PDF-"
    return image


# --- fake inputs ------------------------------------------------------------------------


def write_summary(path: Path, drop: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for model in ("baseline", "castream"):
        for method in METHODS:
            row = {"model": model, "method": method, "n_images": N}
            row.update({c: float(rng.uniform(0, 100)) for c in SUMMARY_COLUMNS[3:]})
            rows.append(row)
    rows[-1]["pointing_game"] = np.nan  # a missing value is drawn, not an error
    df = pd.DataFrame(rows)
    if drop:
        df = df.drop(columns=[drop])
    df.to_csv(path, index=False)
    return path


def write_curves(path: Path, start: int, n: int, steps: int = STEPS) -> Path:
    rng = np.random.default_rng(start)
    x = np.linspace(0, 1, steps + 1)
    np.savez(
        path,
        insertion=np.clip(1 - np.exp(-5 * x) + rng.normal(0, 0.05, (n, steps + 1)), 0, 1),
        deletion=np.clip(np.exp(-5 * x) + rng.normal(0, 0.05, (n, steps + 1)), 0, 1),
        index=np.arange(start, start + n, dtype=np.int64),
    )
    return path


def write_test_split(path: Path) -> Path:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:H, :W]
    masks = np.stack([(yy - 8) ** 2 + (xx - 4 - i % 8) ** 2 < 16 for i in range(N)])
    images = (rng.random((N, 3, H, W)) * 120).astype(np.uint8)
    images[:, 0][masks] = 240
    with h5py.File(path, "w") as f:
        f["images"] = images
        f["labels"] = np.arange(N, dtype=np.int64) % 3
        f["masks"] = masks
        f.attrs["class_names"] = json.dumps(["circle", "square", "triangle"])
    seal(path)  # as write_split finishes a file: its checksum trailer
    return path


def write_saliency(path: Path, method: str, index: np.ndarray, **attrs) -> Path:
    rng = np.random.default_rng(len(method))
    with h5py.File(path, "w") as f:
        f["saliency"] = rng.random((len(index), H, W)).astype(np.float16)
        f["index"] = np.asarray(index, dtype=np.int64)
        f["target"] = np.asarray(index, dtype=np.int64) % 3
        f["label"] = np.asarray(index, dtype=np.int64) % 3
        f.attrs["method"] = method
        for key, value in attrs.items():
            f.attrs[key] = value
    seal(path)  # as the saliency job finishes a file: its checksum trailer
    return path


def write_history(path: Path, model: str, extra: bool = False, epochs: int = 5) -> Path:
    history = {"model": model, "kind": "baseline", "epochs": [], "test_acc": 0.8, "seconds": 12.0}
    for e in range(1, epochs + 1):
        epoch = {
            "epoch": e,
            "train_loss": 1.0 / e,
            "train_acc": 1 - 0.5 / e,
            "test_acc": 0.9 - 0.5 / e,
            "lr": 0.1,
            "seconds": 2.0,
            "note": "ignored",  # non-numeric unknown keys are ignored
        }
        if extra:
            epoch.update(train_ce=0.8 / e, train_reg=0.1 / e, grad_cosine=0.5 + 0.05 * e)
        history["epochs"].append(epoch)
    path.write_text(json.dumps(history))
    return path


# --- summary heatmap --------------------------------------------------------------------


def test_summary_heatmap(tmp_path):
    csv = write_summary(tmp_path / "summary.csv")
    out = tmp_path / "plots" / "summary_heatmap.png"  # parent created on demand
    plot_summary_heatmap(csv, out)
    check_png(out)


def test_summary_heatmap_missing_column_names_column_and_file(tmp_path):
    csv = write_summary(tmp_path / "summary.csv", drop="deletion")
    out = tmp_path / "heatmap.png"
    with pytest.raises(ValueError, match="deletion") as err:
        plot_summary_heatmap(csv, out)
    assert str(csv) in str(err.value)
    assert not out.exists()
    assert list(tmp_path.glob("*.tmp")) == []


def test_summary_heatmap_rejects_non_numeric_and_duplicates(tmp_path):
    csv = write_summary(tmp_path / "summary.csv")
    df = pd.read_csv(csv)
    df["AD"] = df["AD"].astype(object)
    df.loc[0, "AD"] = "oops"
    df.to_csv(csv, index=False)
    with pytest.raises(ValueError, match="'AD'"):
        plot_summary_heatmap(csv, tmp_path / "a.png")
    df = pd.read_csv(write_summary(csv))
    pd.concat([df, df.iloc[:1]]).to_csv(csv, index=False)
    with pytest.raises(ValueError, match="duplicate"):
        plot_summary_heatmap(csv, tmp_path / "a.png")
    with pytest.raises(ValueError, match="not found"):
        plot_summary_heatmap(tmp_path / "nope.csv", tmp_path / "a.png")


def test_goodness_respects_direction():
    values = np.array([10.0, 30.0, np.nan, 20.0])
    np.testing.assert_allclose(goodness(values, True), [0.0, 1.0, np.nan, 0.5])
    np.testing.assert_allclose(goodness(values, False), [1.0, 0.0, np.nan, 0.5])
    np.testing.assert_allclose(goodness(np.array([5.0, 5.0]), True), [0.5, 0.5])


def test_summary_heatmap_pdf_is_reproducible(tmp_path):
    csv = write_summary(tmp_path / "summary.csv")
    plot_summary_heatmap(csv, tmp_path / "a.png")
    plot_summary_heatmap(csv, tmp_path / "b.png")
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()


# --- bar charts -------------------------------------------------------------------------


@pytest.mark.parametrize("with_ci", [True, False])
def test_metric_bars(tmp_path, with_ci):
    csv = write_summary(tmp_path / "summary.csv")
    if with_ci:
        df = pd.read_csv(csv)
        for column in SUMMARY_COLUMNS[3:]:
            df[f"{column}_ci_low"] = df[column] - 5
            df[f"{column}_ci_high"] = df[column] + 3
        df.to_csv(csv, index=False)
    out = tmp_path / "plots" / "metric_bars.png"
    plot_metric_bars(csv, out)
    check_png(out)


def test_metric_bars_legend_has_a_swatch_for_every_method(tmp_path):
    """castream_attention runs on the CA-Stream model only: it has no bar for the first
    model, and still its legend entry is a visible swatch in its colour. Sanity baselines
    are hatched in the legend as in the panels."""
    csv = write_summary(tmp_path / "summary.csv")
    df = pd.read_csv(csv)
    only_castream = df[df["model"] == "castream"].head(1).assign(method="castream_attention")
    pd.concat([df, only_castream]).to_csv(csv, index=False)
    methods = [*METHODS, "castream_attention"]

    fig = metric_bars_figure(csv)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == methods
    for method, handle in zip(methods, legend.legend_handles, strict=True):
        assert handle.get_visible(), method
        assert handle.get_facecolor() == to_rgba(METHOD_COLORS.get(method, method_color(method)))
        assert bool(handle.get_hatch()) == (method in ("fakecam", "random")), method
        # the swatch is the colour and hatch of the method's bars in every panel
        bars = [
            bar
            for ax in fig.axes
            for container in ax.containers
            if container.get_label() == method
            for bar in container.patches
            if bar.get_visible()
        ]
        assert len(bars) == len(METRICS) * (1 if method == "castream_attention" else 2) - (
            method == METHODS[-1]  # write_summary's one NaN (castream, pointing game)
        )
        assert {bar.get_facecolor() for bar in bars} == {handle.get_facecolor()}
        assert {bar.get_hatch() for bar in bars} == {handle.get_hatch()}


def test_metric_bars_bad_input(tmp_path):
    csv = write_summary(tmp_path / "summary.csv", drop="AG")
    with pytest.raises(ValueError, match="AG"):
        plot_metric_bars(csv, tmp_path / "b.png")
    assert not (tmp_path / "b.png").exists()


# --- per-image distributions ------------------------------------------------------------


def write_per_image(path: Path, methods=METHODS, n: int = N) -> Path:
    rng = np.random.default_rng(2)
    rows = []
    for method in methods:
        frame = pd.DataFrame({"model": "baseline", "method": method, "index": np.arange(n)})
        for column in ("AD", "AG", "insertion", "deletion", "energy_pointing_game", "iou"):
            frame[column] = rng.uniform(0, 100, n)
        rows.append(frame)
    pd.concat(rows).to_csv(path, index=False)
    return path


def test_distributions(tmp_path):
    files = [write_per_image(tmp_path / "a.csv"), write_per_image(tmp_path / "b.csv", n=3)]
    out = tmp_path / "plots" / "distributions.png"
    plot_distributions(files, out, title="baseline")
    check_png(out)


def test_distributions_bad_input(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        plot_distributions([tmp_path / "nope.csv"], tmp_path / "d.png")
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"method": ["x"], "other": [1.0]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="none of the columns"):
        plot_distributions([bad], tmp_path / "d.png")
    with pytest.raises(ValueError):
        plot_distributions([], tmp_path / "d.png")


# --- randomization cascade --------------------------------------------------------------


def write_randomization(path: Path, model: str, method: str, flat: bool) -> Path:
    blocks = ["none", "fc", "layer4", "layer3", "layer2", "layer1", "stem"]
    rho = np.ones(7) if flat else np.r_[1.0, np.linspace(0.6, 0.05, 6)]
    pd.DataFrame(
        {
            "model": model,
            "method": method,
            "step": range(7),
            "randomized": blocks,
            "spearman": rho,
            "ci_low": rho - 0.05,
            "ci_high": np.minimum(rho + 0.05, 1),
            "n_images": 8,
            "model_independent": flat,
        }
    ).to_csv(path, index=False)
    return path


def test_randomization_cascade(tmp_path):
    files = [
        write_randomization(tmp_path / f"{model}-{method}.csv", model, method, method == "fakecam")
        for model in ("baseline", "castream")
        for method in ("gradcam", "fakecam", "random")
    ]
    out = tmp_path / "plots" / "randomization.png"
    plot_randomization(files, out)
    check_png(out)


def test_randomization_bad_input(tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"model": ["m"], "method": ["x"], "step": [0]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="spearman") as err:
        plot_randomization([bad], tmp_path / "r.png")
    assert str(bad) in str(err.value)


# --- curves -----------------------------------------------------------------------------


def test_curves(tmp_path):
    files = {
        m: [
            write_curves(tmp_path / f"{m}-0.npz", 0, 6),
            write_curves(tmp_path / f"{m}-1.npz", 6, 4),
        ]
        for m in METHODS
    }
    out = tmp_path / "out" / "curves.png"
    plot_curves(files, out, title="baseline")
    check_png(out)


def test_curves_bad_input(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, insertion=np.zeros((2, 5)), index=np.arange(2))
    with pytest.raises(ValueError, match="deletion") as err:
        plot_curves({"gradcam": [bad]}, tmp_path / "c.png")
    assert str(bad) in str(err.value)
    good = write_curves(tmp_path / "a.npz", 0, 3, steps=8)
    other = write_curves(tmp_path / "b.npz", 3, 3, steps=4)
    with pytest.raises(ValueError, match="steps"):
        plot_curves({"gradcam": [good, other]}, tmp_path / "c.png")
    with pytest.raises(ValueError, match="gradcam"):
        plot_curves({"gradcam": []}, tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


# --- saliency grid ----------------------------------------------------------------------


def test_saliency_grid(tmp_path):
    test_h5 = write_test_split(tmp_path / "test.h5")
    files = {
        m: [
            write_saliency(tmp_path / f"{m}-0.h5", m, np.arange(0, 5), complete=True),
            write_saliency(tmp_path / f"{m}-1.h5", m, np.arange(5, N)),
        ]
        for m in METHODS
    }
    # one method misses image 0: rows are the images common to all methods
    files["scorecam"] = [write_saliency(tmp_path / "scorecam-0.h5", "scorecam", np.arange(1, N))]
    out = tmp_path / "grid" / "saliency_grid.png"
    plot_saliency_grid(test_h5, files, out, n_images=4, title="baseline")
    image = check_png(out)
    assert image.shape[1] > image.shape[0]  # 5 columns, 4 rows


def test_saliency_grid_bad_input(tmp_path):
    test_h5 = write_test_split(tmp_path / "test.h5")
    incomplete = write_saliency(tmp_path / "inc.h5", "gradcam", np.arange(3), complete=False)
    with pytest.raises(ValueError, match="incomplete") as err:
        plot_saliency_grid(test_h5, {"gradcam": [incomplete]}, tmp_path / "g.png")
    assert str(incomplete) in str(err.value)
    wrong = write_saliency(tmp_path / "wrong.h5", "scorecam", np.arange(3))
    with pytest.raises(ValueError, match="scorecam"):
        plot_saliency_grid(test_h5, {"gradcam": [wrong]}, tmp_path / "g.png")
    a = write_saliency(tmp_path / "a.h5", "gradcam", np.arange(0, 3))
    b = write_saliency(tmp_path / "b.h5", "random", np.arange(3, 6))
    with pytest.raises(ValueError, match="no image is present for every method"):
        plot_saliency_grid(test_h5, {"gradcam": [a], "random": [b]}, tmp_path / "g.png")
    outside = write_saliency(tmp_path / "out.h5", "gradcam", np.array([N + 3]))
    with pytest.raises(ValueError, match="outside the split") as err:
        plot_saliency_grid(test_h5, {"gradcam": [outside]}, tmp_path / "g.png")
    assert str(test_h5) in str(err.value)
    with h5py.File(tmp_path / "nomasks.h5", "w") as f:
        f["images"] = np.zeros((N, 3, H, W), np.uint8)
    seal(tmp_path / "nomasks.h5")
    with pytest.raises(ValueError, match="masks"):
        plot_saliency_grid(tmp_path / "nomasks.h5", {"gradcam": [a]}, tmp_path / "g.png")
    assert not (tmp_path / "g.png").exists()


# --- training ---------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [False, True])
def test_training(tmp_path, extra):
    files = [
        write_history(tmp_path / "baseline.json", "baseline"),
        write_history(tmp_path / "gradalign.json", "gradalign", extra=extra, epochs=7),
    ]
    out = tmp_path / "plots" / "training.png"
    plot_training(files, out)
    image = check_png(out)
    if extra:  # the extra keys get panels of their own: a taller figure
        plain = tmp_path / "plain.png"
        plot_training(files[:1], plain)
        assert image.shape[0] > mpimg.imread(plain).shape[0] * 1.4


def panel_titles_and_curves(fig) -> list[tuple[str, tuple]]:
    """(title, the y values of its non-empty lines) of every visible panel."""
    return [
        (
            ax.get_title(),
            tuple(tuple(line.get_ydata()) for line in ax.lines if len(line.get_xdata())),
        )
        for ax in fig.axes
        if ax.get_visible()
    ]


def test_training_baseline_has_no_repeated_panel(tmp_path):
    """A baseline's cross-entropy is its training loss: no second panel repeats it. With
    gradalign, whose loss adds λ·L_R, the cross-entropy panel is drawn, for both models."""
    baseline = write_history(tmp_path / "baseline.json", "baseline", extra=True)
    history = json.loads(baseline.read_text())
    for epoch in history["epochs"]:
        epoch["train_ce"] = epoch["train_loss"]  # what training logs for a plain CE loss
        del epoch["train_reg"]
    baseline.write_text(json.dumps(history))

    panels = panel_titles_and_curves(training_figure([baseline]))
    titles = [title for title, _ in panels]
    assert titles == ["training loss", "accuracy", "gradient alignment (held-out batch)"]
    curves = [curve for _, curve in panels]
    assert len(set(curves)) == len(curves)  # no two panels draw the same data

    gradalign = write_history(tmp_path / "gradalign.json", "gradalign", extra=True)
    panels = dict(panel_titles_and_curves(training_figure([baseline, gradalign])))
    assert len(panels) == 5
    ce = panels["cross-entropy (train)"]
    assert ce == (
        tuple(1.0 / e for e in range(1, 6)),  # the baseline: its loss
        tuple(0.8 / e for e in range(1, 6)),  # gradalign's CE, below its loss
    )


def test_training_bad_input(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": "m", "epochs": [{"epoch": 1, "train_loss": 1.0}]}))
    with pytest.raises(ValueError, match="train_acc") as err:
        plot_training([bad], tmp_path / "t.png")
    assert str(bad) in str(err.value)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        plot_training([bad], tmp_path / "t.png")
    bad.write_text(json.dumps({"model": "m", "epochs": []}))
    with pytest.raises(ValueError, match="epochs"):
        plot_training([bad], tmp_path / "t.png")
    with pytest.raises(ValueError):
        plot_training([], tmp_path / "t.png")


# --- palette and isolation --------------------------------------------------------------

KNOWN = [
    "cam",
    "gradcam",
    "gradcampp",
    "xgradcam",
    "layercam",
    "scorecam",
    "ablationcam",
    "opticam",
    "fakecam",
    "random",
    "gradient",
    "guided_backprop",
    "castream_attention",
]


def test_palette_deterministic_and_distinct():
    colours = [method_color(m) for m in KNOWN]
    assert len(set(colours)) == len(KNOWN)
    assert set(KNOWN) <= set(METHOD_COLORS)
    assert method_color("unknown_x") == method_color("unknown_x")
    assert method_color("unknown_x") not in colours
    # deterministic across interpreters (no salted hash)
    code = "from cambench.plots import method_color; print(method_color('unknown_x'))"
    assert run_python(code) == method_color("unknown_x")


def test_plots_do_not_import_torch():
    code = "import sys, cambench.plots; print('torch' in sys.modules)"
    assert run_python(code) == "False"


def test_figure_inputs_name_the_file_at_fault(tmp_path):
    from cambench.table_io import read_tables

    good = tmp_path / "good.csv"
    pd.DataFrame({"method": ["a"], "x": [1.0]}).to_csv(good, index=False)
    no_method = tmp_path / "no_method.csv"
    pd.DataFrame({"x": [1.0]}).to_csv(no_method, index=False)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert len(read_tables([good, good], "rows", ["method"])) == 2
    with pytest.raises(ValueError, match=r"no_method.csv: missing column\(s\) 'method'"):
        read_tables([good, no_method], "rows", ["method"])
    with pytest.raises(ValueError, match="empty.csv: not a readable CSV"):
        read_tables([empty], "rows")
    with pytest.raises(ValueError, match="gone.csv: rows not found"):
        read_tables([tmp_path / "gone.csv"], "rows")
    with pytest.raises(ValueError, match="non-empty list"):
        read_tables([], "rows")


# --- figures that mislead ----------------------------------------------------------------


def _boxes_overlap(boxes) -> bool:
    """Whether any two display bounding boxes overlap horizontally (left to right)."""
    boxes = sorted(boxes, key=lambda b: b.x0)
    return any(a.x1 > b.x0 for a, b in zip(boxes, boxes[1:], strict=False))


def _many_models_summary(path: Path, models, methods) -> Path:
    rng = np.random.default_rng(3)
    rows = [
        {"model": model, "method": method, "n_images": N}
        | {c: float(rng.uniform(0, 100)) for c in SUMMARY_COLUMNS[3:]}
        for model in models
        for method in methods
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    "models, methods",
    [
        (["baseline", "castream", "gradalign"], METHODS),  # 12 bars: used to be 4 panels wide
        (["resnet18_imagenet_finetuned", "vit_small_patch16_224", "b", "c"], ["gradcam"]),
        ([f"model_number_{k}" for k in range(6)], [*KNOWN[:12]]),
    ],
)
def test_metric_bars_x_labels_never_overprint(tmp_path, models, methods):
    fig = metric_bars_figure(_many_models_summary(tmp_path / "s.csv", models, methods))
    fig.draw_without_rendering()  # the layout the saved figure has
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_xticklabels()]
    assert len(panels) == len(METRICS)
    for ax in panels:
        labels = [t for t in ax.get_xticklabels() if t.get_text()]
        assert [t.get_text().replace("\n", "") for t in labels] == models
        assert not _boxes_overlap([t.get_window_extent() for t in labels]), ax.get_title()


def test_distribution_titles_never_overprint(tmp_path, monkeypatch):
    """Every non-binary metric (the opt-in ones have long titles): three panels a row,
    no title wider than its panel nor overlapping its neighbour."""
    from cambench.plots import distributions

    columns = [m[0] for m in distributions.DISTRIBUTION_METRICS]
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(
        {"method": np.repeat(METHODS, N)}
        | {c: rng.uniform(0, 100, N * len(METHODS)) for c in columns}
    )
    frame.to_csv(tmp_path / "per_image.csv", index=False)
    drawn = {}
    monkeypatch.setattr(distributions, "save_figure", lambda fig, out: drawn.update(fig=fig))
    distributions.plot_distributions([tmp_path / "per_image.csv"], tmp_path / "d.png", "vit")
    fig = drawn["fig"]
    fig.draw_without_rendering()
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == len(columns)
    rows: dict[float, list] = {}
    for ax in panels:
        rows.setdefault(round(ax.get_position().y0, 3), []).append(ax)
        title = ax.title.get_window_extent()
        assert title.width <= ax.get_window_extent().width + 1, ax.get_title()
    for row in rows.values():
        assert not _boxes_overlap([ax.title.get_window_extent() for ax in row])
    assert "per image" not in " ".join(ax.get_title() for ax in panels)  # said once, above
    assert fig.get_suptitle().startswith("vit: per-image scores")
    # each panel's y axis says its metric's unit: percent for AD, nothing for a
    # unitless one (sparseness), never "percent" on a correlation
    from cambench.metric_table import METRICS

    unit = {m.column: m.unit for m in METRICS}
    titles = {m.title.replace(" ", ""): m.column for m in METRICS}  # fit_titles breaks lines

    def expected(ax) -> str:
        column = titles[ax.get_title().rsplit("(", 1)[0].replace("\n", "").replace(" ", "")]
        return "percent" if unit[column] == "%" else unit[column]

    for row in rows.values():
        row.sort(key=lambda ax: ax.get_position().x0)
        wanted = [expected(ax) for ax in row]
        if len(set(wanted)) == 1:  # one unit: said once, on the left
            assert [ax.get_ylabel() for ax in row] == wanted[:1] + [""] * (len(row) - 1)
        else:
            assert [ax.get_ylabel() for ax in row] == wanted
    assert {expected(ax) for ax in panels} >= {"percent", ""}  # both kinds were drawn


def _bold_cells(fig) -> set[tuple[str, int, int]]:
    """(panel title's model, row, column) of every bold number of the heatmap."""
    return {
        (
            ax.get_title(loc="left").split()[0],
            round(t.get_position()[1]),
            round(t.get_position()[0]),
        )
        for ax in fig.axes
        for t in ax.texts
        if t.get_fontweight() == "bold"
    }


def test_summary_heatmap_bolds_by_the_tables_rule(tmp_path, monkeypatch):
    """fakecam (a sanity baseline) and flagged (model-independent) have the best value of
    every column, yet neither is bold; AD ties for every method that may be bold, so no
    AD value is; elsewhere the best of gradcam and layercam is, and only it."""
    from cambench.plots import summary_heatmap

    methods = ["gradcam", "layercam", "flagged", "fakecam"]
    columns = [m[0] for m in METRICS]
    rows = []
    for method in methods:
        row = {"model": "resnet", "method": method, "n_images": N, "model_independent": False}
        for column, _, higher in METRICS:
            good = {"gradcam": 60.0, "layercam": 50.0, "flagged": 80.0, "fakecam": 90.0}[method]
            row[column] = good if higher else 100.0 - good
        row["AD"] = 20.0 if method in ("gradcam", "layercam") else 0.0
        row["model_independent"] = method == "flagged"
        rows.append(row)
    pd.DataFrame(rows).to_csv(tmp_path / "s.csv", index=False)
    drawn = {}
    monkeypatch.setattr(summary_heatmap, "save_figure", lambda fig, out: drawn.update(fig=fig))
    summary_heatmap.plot_summary_heatmap(tmp_path / "s.csv", tmp_path / "h.png")
    ad = columns.index("AD")
    expected = {("resnet", 0, j) for j in range(len(columns)) if j != ad}  # gradcam's row
    assert _bold_cells(drawn["fig"]) == expected


def test_plug_in_methods_are_never_drawn_in_a_baselines_grey():
    import colorsys

    from matplotlib.colors import to_rgb

    greys = {to_rgb(METHOD_COLORS[m]) for m in ("random", "fakecam")}
    for k in range(300):
        colour = to_rgb(method_color(f"plugin_{k}"))
        _, _, saturation = colorsys.rgb_to_hls(*colour)
        assert saturation > 0.2, (k, colour)  # HLS saturation of a grey is 0
        for grey in greys:
            assert np.abs(np.subtract(colour, grey)).max() > 0.15
