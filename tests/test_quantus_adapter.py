"""metrics.quantus: any per-image Quantus metric by class name — the config checks
(unknown class, parameter, a randomisation test, a metric on a method that cannot be
re-run), the scores against independent references (cambench's own Gini index; a
max-sensitivity written here from the paper with Quantus's seeded draws), and the
robustness metrics through the metrics job's re-run of the shard's method."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from cambench.cache import read_saliency
from cambench.metric_table import BY_COLUMN
from cambench.metrics.complexity import sparseness
from cambench.metrics.quantus_adapter import check_quantus, quantus_scores
from cambench.saliency import explain
from cambench.specs import apply_experiment, check_schema, parse_config

pytest.importorskip("quantus")

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _parse(metrics, methods=None):
    from snakemake.utils import validate

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    over = {"metrics": metrics}
    if methods is not None:
        over["methods"] = methods
        over["sanity"] = {"randomization": False}
    apply_experiment(config, over)
    config["metrics"].update(metrics)  # as Snakemake deep-merges a --configfile
    check_schema(config)
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    return parse_config(config)


def test_config_takes_quantus_metrics_and_robustness():
    exp = _parse(
        {
            "quantus": {"Sparseness": {}, "FaithfulnessCorrelation": {"nr_runs": 5}},
            "include": ["robustness"],
        },
        methods={"gradcam": {}, "fakecam": {}},
    )
    m = exp.metrics
    assert {"quantus_Sparseness", "quantus_FaithfulnessCorrelation"} <= set(m.include)
    assert {"max_sensitivity", "avg_sensitivity", "relative_input_stability"} <= set(m.include)
    settings = m.job_settings()
    assert settings["quantus"]["FaithfulnessCorrelation"] == {"nr_runs": 5}
    assert settings["metric_params"]["sensitivity"]["n_samples"] == 10
    assert BY_COLUMN["quantus_Sparseness"].direction == "higher"
    assert BY_COLUMN["quantus_FaithfulnessCorrelation"].direction == "higher"


def test_default_run_is_unchanged():
    exp = _parse({})
    assert "quantus" not in exp.metrics.job_settings()
    assert "include" not in exp.metrics.job_settings()


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ({"quantus": {"Sparsenes": {}}}, r"metrics\.quantus\.Sparsenes'.*no metric class"),
        (
            {"quantus": {"Sparseness": {"nr_runs": 3}}},
            r"metrics\.quantus\.Sparseness\.nr_runs'.*takes no",
        ),
        ({"quantus": {"MPRT": {}}}, r"metrics\.quantus\.MPRT'.*sanity"),
        ({"quantus": {"PixelFlipping": {}}}, r"metrics\.quantus\.PixelFlipping'.*curve"),
        ({"quantus": {"Sparseness": {"return_aggregate": True}}}, r"Sparseness\.return_aggregate'"),
        ({"include": ["quantus_Sparseness"]}, r"metrics\.include'.*metrics\.quantus"),
        (
            {"params": {"sensitivity": {"radius": "big"}}, "include": ["robustness"]},
            r"metrics\.params\.sensitivity\.radius",
        ),
    ],
)
def test_config_errors_name_the_key(metrics, message):
    with pytest.raises(ValueError, match=message):
        _parse(metrics, methods={"gradcam": {}})


@pytest.mark.parametrize(
    "metrics", [{"include": ["max_sensitivity"]}, {"quantus": {"Sparseness": {}}}]
)
def test_rerun_metrics_refuse_a_method_that_reads_masks(metrics):
    with pytest.raises(ValueError, match=r"methods\.oracle'.*object masks"):
        _parse(metrics, methods={"gradcam": {}, "oracle": {"method": "mask_oracle"}})


def test_check_quantus_passes_parameters_through():
    assert check_quantus({"Sparseness": None, "MaxSensitivity": {"nr_samples": 2}}) == {
        "Sparseness": {},
        "MaxSensitivity": {"nr_samples": 2},
    }
    assert check_quantus(None) == {}


@pytest.fixture
def batch(small_resnet):
    gen = torch.Generator().manual_seed(2)
    images = 0.2 + 0.6 * torch.rand(3, 3, 32, 32, generator=gen)
    targets = torch.tensor([0, 4, 6])
    maps = explain("gradcam", small_resnet, images, targets)
    return small_resnet, images, targets, maps, torch.tensor([20, 21, 22])


def test_sparseness_equals_cambench_gini(batch):
    model, images, targets, maps, index = batch
    out = quantus_scores(
        {"Sparseness": {}}, model, images, targets, maps, None, index, "gradcam", {}, None, 8
    )
    np.testing.assert_allclose(
        out["quantus_Sparseness"].numpy(), sparseness(maps).numpy(), rtol=1e-5
    )


def test_max_sensitivity_recomputes_with_the_shard_method(batch):
    """Quantus's uniform draws, seeded with the batch's first image position, replayed
    here; the map recomputed by cambench's explain of the given method."""
    model, images, targets, maps, index = batch
    radius, n = 0.05, 2
    out = quantus_scores(
        {"MaxSensitivity": {"nr_samples": n, "lower_bound": radius}},
        model, images, targets, maps, None, index, "gradcam", {}, None, 8,
    )  # fmt: skip
    rng = np.random.RandomState(int(index[0]))
    x = images.numpy().reshape(3, -1)
    a = maps.numpy().reshape(3, -1).astype(np.float64)
    best = np.full(3, -np.inf)
    for _ in range(n):
        noisy = x + rng.uniform(-radius, radius, size=x.shape)
        xs = torch.as_tensor(noisy, dtype=torch.float32).view_as(images).clamp(0, 1)
        b = explain("gradcam", model, xs, targets).numpy().reshape(3, -1)
        best = np.maximum(best, np.linalg.norm(a - b, axis=1) / np.linalg.norm(a, axis=1))
    np.testing.assert_allclose(out["quantus_MaxSensitivity"].numpy(), best, rtol=1e-5)
    again = quantus_scores(
        {"MaxSensitivity": {"nr_samples": n, "lower_bound": radius}},
        model, images, targets, maps, None, index, "gradcam", {}, None, 8,
    )  # fmt: skip
    assert torch.equal(again["quantus_MaxSensitivity"], out["quantus_MaxSensitivity"])


def test_localisation_metric_reads_the_masks(batch):
    model, images, targets, maps, index = batch
    masks = torch.zeros(3, 32, 32, dtype=torch.bool)
    peak = maps.flatten(1).argmax(1)
    masks.view(3, -1)[torch.arange(3), peak] = True  # the maximum inside: a hit
    masks[2] = maps[2] < 0.5 * maps[2].max()  # the maximum outside
    assert masks[2].any()
    out = quantus_scores(
        {"PointingGame": {}}, model, images, targets, maps, masks, index, "gradcam", {}, None, 8
    )
    assert out["quantus_PointingGame"].tolist() == [1.0, 1.0, 0.0]


@pytest.mark.slow
def test_workflow_scores_a_quantus_metric_robustness_and_the_sanity_checks(
    tmp_path, tiny_run_template
):
    """The tiny experiment with metrics.quantus (Sparseness), max/avg-sensitivity and
    the optional sanity checks: their columns in the per-image CSVs and the summary."""
    import pandas as pd
    from conftest import copy_of_run, planned_jobs, snakemake

    # on the finished tiny run: the data, model and maps are reused, the metrics rerun
    workdir = copy_of_run(tiny_run_template, tmp_path / "run")
    config = yaml.safe_load((workdir / "tiny.yaml").read_text())
    config["metrics"]["quantus"] = {"Sparseness": {}}
    config["metrics"]["include"] = ["sensitivity"]
    config["metrics"]["params"] = {"sensitivity": {"n_samples": 2}}
    config["sanity"] = {
        "randomization": True,
        "methods": ["gradcam"],
        "n_images": 4,
        "random_logit": True,
        "smooth_mprt": {"n_samples": 2},
        "efficient_mprt": {},
    }
    (workdir / "q.yaml").write_text(yaml.safe_dump(config))
    plan = planned_jobs(snakemake(workdir, "-n", "--configfile", "q.yaml").stdout)
    assert plan["sanity_checks"] == 1 and plan["randomization"] == 1
    assert "train" not in plan and "saliency" not in plan  # the copied run's are current
    snakemake(workdir, "--cores", "2", "--configfile", "q.yaml")
    results = workdir / "results" / "tiny"
    for method in config["methods"]:
        frame = pd.read_csv(results / "metrics" / "baseline" / method / "shard-0.csv")
        for column in ("quantus_Sparseness", "max_sensitivity", "avg_sensitivity"):
            assert frame[column].notna().all(), (method, column)
        maps = read_saliency(results / "saliency" / "baseline" / method / "shard-0.h5").maps
        np.testing.assert_allclose(
            frame["quantus_Sparseness"], sparseness(maps.float()).numpy(), rtol=1e-4
        )
        if method == "fakecam":  # the same map for any input
            assert (frame["max_sensitivity"] == 0).all()
    summary = pd.read_csv(results / "summary.csv")
    for column in ("quantus_Sparseness", "max_sensitivity", "avg_sensitivity"):
        assert column in summary.columns and summary[column].notna().all()
    checks = pd.read_csv(results / "sanity" / "baseline" / "gradcam.checks.csv")
    assert {"random_logit", "smooth_mprt", "efficient_mprt"} == set(checks["test"])
    markdown = (results / "summary.md").read_text()
    assert "## Sanity checks: random logit, smooth and efficient MPRT" in markdown
    assert "| baseline | gradcam |" in markdown
    again = planned_jobs(snakemake(workdir, "-n", "--configfile", "q.yaml").stdout)
    assert not again, again


def test_localisation_class_needs_a_dataset_with_masks(monkeypatch):
    import cambench.specs

    monkeypatch.setattr(cambench.specs, "dataset_has_masks", lambda dataset: False)
    with pytest.raises(ValueError, match=r"metrics\.quantus\.PointingGame'.*masks"):
        _parse({"quantus": {"PointingGame": {}}}, methods={"gradcam": {}})
    assert _parse({"quantus": {"Sparseness": {}}}, methods={"gradcam": {}}).metrics.quantus
