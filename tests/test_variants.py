"""Variants of one method: a ``methods:`` entry's ``method:`` key names the method it runs,
its key (the label) names it in every file, table and figure. Applicability, sanity
baselines and the code digest follow the registered method; the default config (label
== method) keeps its files as they were."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import copy_of_run, planned_jobs, snakemake
from test_config import check_config

from cambench.best import rankable
from cambench.cache import read_saliency
from cambench.data.store import Split, write_split
from cambench.jobs import saliency as saliency_job
from cambench.jobs import sanity as sanity_job
from cambench.jobs.metrics import check_provenance
from cambench.models import save_checkpoint
from cambench.provenance import stage_digest
from cambench.saliency.core import example_inputs
from cambench.specs import _method_params
from cambench.summary.aggregate import summarize_metrics
from cambench.summary.render import summary_table

# The attributes of a saliency file of the default config (label == method).
DEFAULT_ATTRS = {
    "method",
    "params",
    "layer",
    "model_sha256",
    "model",
    "shard",
    "shards",
    "dataset",
    "split",
    "target_mode",
    "device",
    "code_sha256",
    "data_sha256",
    "n_images",
    "batch_size",
}


def test_two_entries_of_one_method_are_two_labelled_methods():
    exp = check_config(
        {
            "methods": {
                "opticam_2": {"method": "opticam", "iterations": 2},
                "opticam_5": {"method": "opticam", "iterations": 5, "lr": 0.05},
                "gradcam": {},
            }
        }
    )
    assert list(exp.methods) == ["opticam_2", "opticam_5", "gradcam"]
    assert exp.methods["opticam_2"]["iterations"] == 2
    assert exp.methods["opticam_5"]["iterations"] == 5 and exp.methods["opticam_5"]["lr"] == 0.05
    assert "method" not in exp.methods["opticam_2"]  # the method's own parameters only
    assert exp.method_of("opticam_5") == "opticam" and exp.method_of("gradcam") == "gradcam"
    assert exp.registered == {"opticam_2": "opticam", "opticam_5": "opticam"}


def test_applicability_follows_the_registered_method_not_the_label():
    exp = check_config(
        {
            "methods": {
                "cam": {"method": "gradcam"},  # a label that is another method's name
                "cam_gap": {"method": "cam"},
                "stream": {"method": "castream_attention"},
            }
        }
    )
    kinds = {name: spec.kind for name, spec in exp.models.items()}
    castream = [m for m, k in kinds.items() if k == "castream"]
    others = [m for m, k in kinds.items() if k != "castream"]
    assert castream and others
    for model in castream:
        assert exp.methods_for(model) == ["cam", "stream"]
    for model in others:
        assert exp.methods_for(model) == ["cam", "cam_gap"]


@pytest.mark.parametrize(
    ("methods", "message"),
    [
        ({"x": {"method": "gradcamm"}}, r"config key 'methods\.x\.method': unknown saliency "),
        ({"x": {"method": 3}}, r"config key 'methods\.x\.method': unknown saliency method 3"),
        ({"x/y": {"method": "gradcam"}}, r"config key 'methods\.x/y': method name 'x/y'"),
        ({"-x": {}}, r"config key 'methods\.-x': method name '-x' is not allowed"),
        ({"o": {"method": "opticam", "iters": 3}}, r"config key 'methods\.o': .*'iters'"),
        ({"o": {"method": "opticam", "iterations": "3"}}, r"'methods\.o\.iterations': expected"),
    ],
)
def test_bad_entries_name_the_key(methods, message):
    with pytest.raises(ValueError, match=message):
        _method_params(methods)


def test_bad_entries_fail_the_schema_or_the_config_check_before_any_job():
    with pytest.raises(Exception, match=r"methods\.x\.method|'methods.x.method'|gradcamm"):
        check_config({"methods": {"x": {"method": "gradcamm"}}})
    with pytest.raises(Exception, match="does not match"):
        check_config({"methods": {"x": {"method": "not a name"}}})


# --- the jobs --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 4-image split and a seeded small model's checkpoint."""
    tmp = tmp_path_factory.mktemp("variants")
    model, _, _ = example_inputs()
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    split = Split(
        (images * 255).to(torch.uint8),
        torch.tensor([0, 1, 2, 3]),
        torch.zeros(4, 32, 32, dtype=torch.bool),
        [str(i) for i in range(10)],
        {"dataset": "shapes", "split": "test", "has_masks": True},
    )
    write_split(tmp / "test.h5", split)
    config = {"kind": "baseline", "arch": "resnet_small", "width": 8, "blocks": [1, 1, 1, 1]}
    save_checkpoint(tmp / "m.pt", model, config, 10, split.class_names)
    return tmp


def _saliency(files, label, params, out):
    saliency_job.run(
        files / "m.pt",
        files / "test.h5",
        files / out,
        label,
        params,
        None,
        4,
        1,
        0,
        4,
        "label",
        torch.device("cpu"),
        "m",
        False,
    )
    return read_saliency(files / out)


def test_a_variants_file_records_its_label_and_the_registered_method(files):
    plain = _saliency(files, "gradcam", {}, "gradcam.h5")
    variant = _saliency(files, "gc_b", {"method": "gradcam"}, "gc_b.h5")
    assert torch.equal(plain.maps, variant.maps)  # the same method, the same maps
    written = {"complete", "seconds", "cambench_version", "n_done", "degenerate_counts"}
    assert set(plain.attrs) - written == DEFAULT_ATTRS
    assert "registered_method" not in plain.attrs and "library" not in plain.attrs
    assert plain.attrs["method"] == "gradcam"
    assert variant.attrs["method"] == "gc_b" and variant.attrs["registered_method"] == "gradcam"
    assert variant.params == plain.params  # "method" is taken out of the parameters
    # the code digest that drives reruns is the registered method's
    assert variant.attrs["code_sha256"] == stage_digest("saliency", "gradcam")
    assert variant.attrs["code_sha256"] == plain.attrs["code_sha256"]
    # the metrics job's check: label, registered method, parameters
    expected = {"model": "m", "method": "gc_b", "params": plain.params}
    check_provenance(variant, {**expected, "registered_method": "gradcam"}, 4)
    with pytest.raises(ValueError, match="computed with method 'gradcam', expected 'layercam'"):
        check_provenance(variant, {**expected, "registered_method": "layercam"}, 4)
    with pytest.raises(ValueError, match="holds method 'gradcam', expected 'gc_b'"):
        check_provenance(plain, expected, 4)


def test_a_variants_parameters_reach_the_method(files):
    a = _saliency(files, "random_a", {"method": "random", "seed": 1}, "random_a.h5")
    b = _saliency(files, "random_b", {"method": "random", "seed": 2}, "random_b.h5")
    assert a.params["seed"] == 1 and b.params["seed"] == 2
    assert not torch.equal(a.maps, b.maps)


def test_the_sanity_job_writes_the_label_and_runs_the_registered_method(files):
    frame = sanity_job.run(
        files / "m.pt",
        files / "test.h5",
        files / "fake.csv",
        "fake_b",
        {"method": "fakecam"},
        None,
        2,
        "label",
        2,
        torch.device("cpu"),
        "m",
        0,
        0.5,
        {"resamples": 50, "confidence": 0.9},
    )
    assert set(frame["method"]) == {"fake_b"}
    assert frame["model_independent"].all()  # Fake-CAM never depends on the weights


# --- the summary ----------------------------------------------------------------------


def _per_image(labels, registered):
    rows = []
    for label in labels:
        for i in range(4):
            row = {"model": "m", "method": label, "index": i, "seconds": 0.01}
            row.update({c: 10.0 * (labels.index(label) + 1) + i for c in ("AD", "AI", "AG")})
            row.update({"insertion": 50.0, "deletion": 20.0, "PG": 75.0, "EBPG": 40.0})
            if label in registered:
                row["registered_method"] = registered[label]
            rows.append(row)
    return pd.DataFrame(rows)


def test_sanity_baselines_stay_baselines_under_another_label():
    from cambench.metric_table import COLUMNS

    labels = ["gradcam", "layercam", "random_b", "fake_2"]
    variants = {"random_b": "random", "fake_2": "fakecam"}
    per_image = _per_image(labels, variants)  # AI, AG grow down the list: fake_2 best
    for column in COLUMNS:
        if column not in per_image.columns:
            per_image[column] = 1.0
    summary = summarize_metrics(per_image, 50, 0.9, 0)
    assert list(summary["method"]) == labels
    assert summary["registered_method"].tolist() == ["gradcam", "layercam", "random", "fakecam"]
    assert rankable(summary).tolist() == [True, True, False, False]
    table = summary_table(summary)  # the best AI/AG that counts is layercam's, not fake_2's
    assert any(cell.bold for cell in table.rows[1])
    assert not any(cell.bold for row in table.rows[2:] for cell in row)
    # the default run (no variant): no new column, the same rule by the method's name
    plain = per_image.drop(columns="registered_method")
    plain["method"] = plain["method"].replace(variants)
    plain_summary = summarize_metrics(plain, 50, 0.9, 0)
    assert "registered_method" not in plain_summary.columns
    assert rankable(plain_summary).tolist() == [True, True, False, False]


# --- end to end ------------------------------------------------------------------------


@pytest.mark.slow
def test_two_variants_run_through_the_workflow_as_two_labelled_rows(tmp_path, tiny_run_template):
    workdir = copy_of_run(tiny_run_template, tmp_path / "run")  # its data and model reused
    config = yaml.safe_load((workdir / "tiny.yaml").read_text())
    config["methods"] = {
        "gradcam": {},
        "random_a": {"method": "random", "seed": 1},
        "random_b": {"method": "random", "seed": 2},
    }
    config["eval"] = {**config["eval"], "n_images": 6, "shards": 1, "batch_size": 6}
    (workdir / "variants.yaml").write_text(yaml.safe_dump(config))
    snakemake(workdir, "results/tiny/summary.csv", "--cores", "2", "--configfile", "variants.yaml")
    results = workdir / "results" / "tiny"
    summary = pd.read_csv(results / "summary.csv")
    assert list(summary["method"]) == ["gradcam", "random_a", "random_b"]
    assert summary["registered_method"].tolist() == ["gradcam", "random", "random"]
    for label, seed in (("random_a", 1), ("random_b", 2)):
        path = results / "saliency" / "baseline" / label / "shard-0.h5"
        with h5py.File(path) as f:
            assert f.attrs["method"] == label and f.attrs["registered_method"] == "random"
        assert read_saliency(path).params == {"seed": seed}
        assert (results / "metrics" / "baseline" / label / "shard-0.csv").exists()
    maps = [
        read_saliency(results / "saliency" / "baseline" / m / "shard-0.h5").maps
        for m in ("random_a", "random_b")
    ]
    assert not np.array_equal(maps[0], maps[1])
    md = (results / "summary.md").read_text()
    assert "| random_a" in md and "| random_b" in md
    # nothing is stale afterwards: params and code digests are stable
    dry = snakemake(workdir, "results/tiny/summary.csv", "-n", "--configfile", "variants.yaml")
    assert planned_jobs(dry.stdout) == {}
