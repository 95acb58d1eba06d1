"""End to end: the tiny experiment through Snakemake, then incremental reruns."""

from __future__ import annotations

import json

import h5py
import pandas as pd
import pytest
import yaml
from conftest import SMALL_RESNET_CASCADE, copy_of_run, planned_jobs, snakemake

from cambench.cache import read_saliency
from cambench.models import file_sha256

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_run_template):
    """The tiny experiment run to the end (a copy of the session's run: these tests
    change configs and code and rerun on it)."""
    return copy_of_run(tiny_run_template, tmp_path_factory.mktemp("workflow") / "run")


def test_every_output_exists(run):
    results = run / "results" / "tiny"
    config = yaml.safe_load((run / "tiny.yaml").read_text())
    methods, shards = list(config["methods"]), config["eval"]["shards"]
    assert (results / "data" / "train.h5").exists() and (results / "data" / "test.h5").exists()
    assert (results / "models" / "baseline.pt").exists()
    for method in methods:
        for shard in range(shards):
            assert (results / "saliency" / "baseline" / method / f"shard-{shard}.h5").exists()
            assert (results / "metrics" / "baseline" / method / f"shard-{shard}.csv").exists()
            assert (results / "metrics" / "baseline" / method / f"shard-{shard}.npz").exists()
    for png in (
        "summary_heatmap",
        "metric_bars",
        "rank_heatmap",
        "training",
        "curves_baseline",
        "distributions_baseline",
        "saliency_grid_baseline",
    ):
        assert (results / "plots" / f"{png}.png").stat().st_size > 10_000
        assert (results / "plots" / f"{png}.pdf").stat().st_size > 1_000
    for table in ("summary", "comparison"):
        for ext in ("csv", "md", "tex"):
            assert (results / f"{table}.{ext}").stat().st_size > 50
    assert (results / "ranks.csv").stat().st_size > 50
    assert not (results / "sanity").exists()  # the sanity check is off in the tiny config
    assert (run / "logs" / "tiny" / "train" / "baseline.log").exists()
    assert (run / "benchmarks" / "runs" / "tiny" / "train" / "baseline.tsv").exists()
    assert not list(results.rglob(".*.tmp"))


def test_saliency_files_follow_the_design(run):
    results = run / "results" / "tiny"
    sha = file_sha256(results / "models" / "baseline.pt")
    indices = []
    for shard in range(2):
        path = results / "saliency" / "baseline" / "gradcam" / f"shard-{shard}.h5"
        cache = read_saliency(path, model_sha256=sha)
        assert cache.maps.shape == (8, 32, 32)
        assert cache.maps.min() >= 0 and cache.maps.max() <= 1
        assert torch_equal(cache.target, cache.label)  # eval.target: label
        assert cache.attrs["layer"] == "layer4" and cache.attrs["method"] == "gradcam"
        assert cache.attrs["split"] == "test" and cache.attrs["dataset"] == "shapes"
        indices += cache.index.tolist()
        with h5py.File(path) as f:
            assert f["saliency"].dtype == "float16"
    assert indices == list(range(16))


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_summary_has_one_row_per_model_and_method(run):
    summary = pd.read_csv(run / "results" / "tiny" / "summary.csv")
    assert sorted(summary["method"]) == ["fakecam", "gradcam", "random"]
    assert (summary["n_images"] == 16).all()
    fakecam = summary.set_index("method").loc["fakecam"]
    assert fakecam["AD"] < 1.0  # Fake-CAM keeps the whole image: no drop
    assert (summary["AD_ci_low"] <= summary["AD"]).all()
    assert (summary["AD"] <= summary["AD_ci_high"]).all()
    assert set(summary["protocol"]) == {"custom"}
    text = (run / "results" / "tiny" / "summary.md").read_text()
    assert "| baseline | gradcam |" in text and "test acc. (%)" in text and "grad. cosine" in text
    assert "custom: 8 steps" in text and "**" in text
    assert "## Ranks across metrics" in text
    comparison = (run / "results" / "tiny" / "comparison.md").read_text()
    assert "Only one model (baseline)" in comparison


def test_nothing_to_do_after_a_complete_run(run):
    proc = snakemake(run, "-n", "--configfile", "tiny.yaml")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_changing_one_method_parameter_reruns_only_that_method(run):
    name = _config_with(run, "tiny-seed.yaml", **{"methods.random.seed": 8})
    proc = snakemake(run, "-n", "--configfile", name)
    assert planned_jobs(proc.stdout) == {"saliency": 2, "metrics": 2, **AGGREGATES}
    planned = [line for line in proc.stdout.splitlines() if line.strip().startswith("output:")]
    saliency_outputs = [line for line in planned if "/saliency/" in line]
    assert len(saliency_outputs) == 2
    assert all("/saliency/baseline/random/" in line for line in saliency_outputs)


def test_report_builds_with_every_figure(run):
    snakemake(run, "--configfile", "tiny.yaml", "--report", "report.html")
    html = (run / "report.html").read_text(errors="replace")
    for name in (
        "summary_heatmap.png",
        "metric_bars.png",
        "rank_heatmap.png",
        "training.png",
        "curves_baseline.png",
        "distributions_baseline.png",
        "saliency_grid_baseline.png",
        "summary.csv",
        "comparison.csv",
        "ranks.csv",
    ):
        assert name in html


def _config_with(run, name: str, **changes) -> str:
    """Write ``name``: the tiny config with ``changes`` (dotted keys) applied."""
    config = yaml.safe_load((run / "tiny.yaml").read_text())
    for dotted, value in changes.items():
        node = config
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    (run / name).write_text(yaml.safe_dump(config))
    return name


def _dry_run_with(run, name: str, **changes) -> dict[str, int]:
    name = _config_with(run, name, **changes)
    return planned_jobs(snakemake(run, "-n", "--configfile", name).stdout)


# plot_experiment: summary and rank heatmaps, metric bars (+ training, randomization);
# plot_model: curves, distributions and saliency grid of the one model
AGGREGATES = {"summarize": 1, "plot_experiment": 3, "plot_model": 3, "all": 1}


def test_changing_training_reruns_the_model_chain(run):
    jobs = _dry_run_with(run, "tiny-train.yaml", **{"models.baseline.lr": 0.02})
    assert jobs == {"train": 1, "saliency": 6, "metrics": 6, **AGGREGATES, "plot_experiment": 4}


def test_another_training_thread_count_retrains(run):
    """CPU training is bit-reproducible for one thread count only: the run used 2
    (min(4, --cores 2)); with --cores 1 the model is trained again, and so is
    everything downstream. The history records the count."""
    jobs = planned_jobs(snakemake(run, "-n", "--cores", "1", "--configfile", "tiny.yaml").stdout)
    assert jobs == {"train": 1, "saliency": 6, "metrics": 6, **AGGREGATES, "plot_experiment": 4}
    history = json.loads((run / "results" / "tiny" / "models" / "baseline.json").read_text())
    assert history["threads"] == 2


def test_changing_the_dataset_reruns_everything(run):
    jobs = _dry_run_with(run, "tiny-data.yaml", **{"dataset.seed": 2})
    assert jobs == {
        "prepare_data": 1,
        "train": 1,
        "saliency": 6,
        "metrics": 6,
        **AGGREGATES,
        "plot_experiment": 4,
    }


# a metrics-stage change: every metrics job and what reads the per-image metrics
METRICS_RERUN = {"metrics": 6, "summarize": 1, "plot_experiment": 3, "plot_model": 2, "all": 1}


def _edit(path, old: str, new: str):
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))
    return text


def test_changing_one_methods_code_reruns_only_that_method(run):
    path = run / "workflow" / "cambench" / "saliency" / "baselines.py"
    original = _edit(
        path,
        "    b, _, h, w = images.shape\n    pixels",
        "    b, _, h, w = images.shape  # edited\n    pixels",
    )
    try:
        proc = snakemake(run, "-n", "--configfile", "tiny.yaml")
    finally:
        path.write_text(original)
    assert planned_jobs(proc.stdout) == {"saliency": 2, "metrics": 2, **AGGREGATES}
    saliency = [
        line for line in proc.stdout.splitlines() if "output:" in line and "/saliency/" in line
    ]
    assert len(saliency) == 2 and all("/random/" in line for line in saliency)


def test_changing_metric_code_reruns_metrics_not_saliency(run):
    path = run / "workflow" / "cambench" / "metrics" / "localization.py"
    original = _edit(path, "    Energy: ``sum(map * mask)", "    Edited. Energy: ``sum(map * mask)")
    try:
        jobs = planned_jobs(snakemake(run, "-n", "--configfile", "tiny.yaml").stdout)
    finally:
        path.write_text(original)
    assert jobs == METRICS_RERUN


def test_changing_the_bootstrap_reruns_only_the_tables_and_their_figures(run):
    jobs = _dry_run_with(run, "tiny-stats.yaml", **{"metrics.statistics": {"resamples": 200}})
    assert jobs == {"summarize": 1, "plot_experiment": 3, "all": 1}


def test_changing_the_pointing_tolerance_reruns_metrics_not_saliency(run):
    jobs = _dry_run_with(run, "tiny-tol.yaml", **{"metrics.pointing_tolerance": 1})
    assert jobs == METRICS_RERUN


def test_a_protocol_that_contradicts_the_explained_class_fails_before_any_job(run):
    # the Opti-CAM protocol explains the predicted class, the tiny config the label
    name = _config_with(run, "tiny-opticam.yaml", metrics={"protocol": "opticam"})
    proc = snakemake(run, "-n", "--configfile", name, check=False)
    assert proc.returncode != 0
    assert "eval.target: predicted" in proc.stdout + proc.stderr


def test_changing_a_base_model_retrains_its_castream_model(run):
    """A CA-Stream model is trained on its base's checkpoint: a new base retrains it;
    a change of the CA-Stream model's own training retrains it alone."""
    castream = {"kind": "castream", "base": "baseline", "epochs": 1, "batch_size": 64}
    target = "results/tiny/models/castream.pt"
    name = _config_with(run, "tiny-ca.yaml", **{"models.castream": castream})
    # (targets before --configfile, which takes several values)
    snakemake(run, target, "--cores", "2", "--configfile", name)
    assert "Nothing to be done" in snakemake(run, "-n", target, "--configfile", name).stdout

    def planned_models(config_name: str) -> set[str]:
        stdout = snakemake(run, "-n", target, "--configfile", config_name).stdout
        outputs = [line for line in stdout.splitlines() if line.strip().startswith("output:")]
        return {m for m in ("baseline", "castream") for o in outputs if f"models/{m}.pt" in o}

    base_lr = {"models.castream": castream, "models.baseline.lr": 0.02}
    assert planned_models(_config_with(run, "tiny-ca-base.yaml", **base_lr)) == {
        "baseline",
        "castream",
    }
    own_lr = {"models.castream": {**castream, "lr": 0.02}}
    assert planned_models(_config_with(run, "tiny-ca-own.yaml", **own_lr)) == {"castream"}


# Last: it adds results (the sanity check) that the tiny config does not ask for.
def test_randomization_sanity_check_flags_model_independent_methods(run):
    plan = _dry_run_with(run, "tiny-sanity.yaml", sanity={"randomization": True, "n_images": 6})
    assert plan == {
        "randomization": 3,
        "summarize": 1,
        "plot_experiment": 4,
        "all": 1,
    }
    snakemake(run, "--cores", "2", "--configfile", "tiny-sanity.yaml")
    results = run / "results" / "tiny"
    summary = pd.read_csv(results / "summary.csv").set_index("method")
    assert summary["model_independent"].to_dict() == {
        "fakecam": True,
        "gradcam": False,
        "random": True,
    }
    cascade = pd.read_csv(results / "sanity" / "baseline" / "gradcam.csv")
    assert list(cascade["randomized"]) == ["none", *SMALL_RESNET_CASCADE]
    assert (results / "plots" / "randomization.png").stat().st_size > 10_000
    assert "model-independent" in (results / "summary.md").read_text()


def test_job_logs_read_as_text(run):
    """Each job's log: a header (job, model, method, parameters, device, threads,
    inputs, version), plain progress lines (no carriage-return bars in a file), and a
    closing line with what it wrote and how long it took."""
    logs = run / "logs" / "tiny"
    saliency = (logs / "saliency" / "baseline" / "gradcam" / "shard-0.log").read_text()
    first = saliency.splitlines()[0]
    assert first.startswith("cambench ") and "· saliency ·" in first
    for line in ("  model: baseline", "  method: gradcam", "  parameters: {}", "  device: cpu"):
        assert line in saliency, saliency
    assert "  threads: 1" in saliency and "  input: results/tiny/models/baseline.pt" in saliency
    assert "gradcam shard 0: 1/1 batches" in saliency
    assert "  wrote: results/tiny/saliency/baseline/gradcam/shard-0.h5" in saliency
    assert saliency.rstrip().splitlines()[-1].startswith("done in ")
    for path in logs.rglob("*.log"):
        text = path.read_text()
        assert "\r" not in text, path
        # torch's thread count follows the rule's threads in every job (train: 2 here)
        expected = "2" if path.parent.name == "train" else "1"
        threads = [line.split(": ")[1] for line in text.splitlines() if "  threads: " in line]
        assert threads == [expected], (path, threads)
        if "plots" not in path.parts:
            assert text.startswith("cambench "), path
    train = (logs / "train" / "baseline.log").read_text()
    assert "epoch 2/2: loss" in train and max(len(line) for line in train.splitlines()) < 400
