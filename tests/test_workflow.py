"""End to end: the tiny experiment through Snakemake, then incremental reruns."""

from __future__ import annotations

import h5py
import pandas as pd
import pytest
import yaml
from conftest import copy_workflow, planned_jobs, snakemake

from cambench.cache import read_saliency
from cambench.models import file_sha256

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("workflow"))
    snakemake(workdir, "--cores", "2", "--configfile", "tiny.yaml")
    return workdir


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
    for png in ("summary_heatmap", "training", "curves_baseline", "saliency_grid_baseline"):
        assert (results / "plots" / f"{png}.png").stat().st_size > 10_000
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
    text = (run / "results" / "tiny" / "summary.md").read_text()
    assert "| baseline | gradcam |" in text and "test_accuracy" in text


def test_nothing_to_do_after_a_complete_run(run):
    proc = snakemake(run, "-n", "--configfile", "tiny.yaml")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_changing_one_method_parameter_reruns_only_that_method(run):
    config = yaml.safe_load((run / "tiny.yaml").read_text())
    config["methods"]["random"]["seed"] += 1
    (run / "tiny-seed.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(run, "-n", "--configfile", "tiny-seed.yaml")
    jobs = planned_jobs(proc.stdout)
    assert jobs == {
        "saliency": 2,
        "metrics": 2,
        "summarize": 1,
        "plot_summary": 1,
        "plot_curves": 1,
        "plot_saliency_grid": 1,
        "all": 1,
    }
    planned = [line for line in proc.stdout.splitlines() if line.strip().startswith("output:")]
    saliency_outputs = [line for line in planned if "/saliency/" in line]
    assert len(saliency_outputs) == 2
    assert all("/saliency/baseline/random/" in line for line in saliency_outputs)


def test_report_builds_with_every_figure(run):
    snakemake(run, "--configfile", "tiny.yaml", "--report", "report.html")
    html = (run / "report.html").read_text(errors="replace")
    for name in ("summary_heatmap.png", "training.png", "curves_baseline.png", "saliency_grid_baseline.png"):
        assert name in html
