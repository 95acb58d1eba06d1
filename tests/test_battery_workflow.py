"""End to end: the added faithfulness and complexity metrics (metrics.include) through
Snakemake on the tiny experiment (a few images, cheap parameters): their per-image
columns, the parameters and seeds recorded with them, the summary tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import copy_of_run, snakemake

from cambench.metric_table import BY_COLUMN, DEFAULT_COLUMNS, PARAMS

pytestmark = pytest.mark.slow

N_IMAGES = 4
METHODS = {"gradcam": {}, "random": {"seed": 7}}
PARAMS_GIVEN = {
    "road": {"percentages": [20, 50, 80], "score": "probability"},
    "faithfulness_correlation": {"subset_size": 32, "n_subsets": 8},
    "monotonicity_correlation": {"pixels_per_step": 128, "n_samples": 2},
    "irof": {"cells": 4},
}
ADDED = [
    "road_morf",
    "road_lerf",
    "road",
    "faithfulness_correlation",
    "monotonicity_correlation",
    "irof",
    "sparseness",
    "complexity",
    "effective_complexity",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_run_template):
    # on a copy of the finished tiny run: its data and model are reused
    workdir = copy_of_run(tiny_run_template, tmp_path_factory.mktemp("battery") / "run")
    config = yaml.safe_load((workdir / "tiny.yaml").read_text())
    config["methods"] = METHODS
    config["eval"].update(n_images=N_IMAGES, shards=1, batch_size=N_IMAGES)
    config["metrics"]["include"] = ["default", "faithfulness", "complexity"]
    config["metrics"]["params"] = PARAMS_GIVEN
    (workdir / "battery.yaml").write_text(yaml.safe_dump(config))
    snakemake(workdir, "--cores", "2", "--configfile", "battery.yaml")
    return workdir / "results" / "tiny"


def test_per_image_columns_are_finite_with_their_parameters(run):
    for method in METHODS:
        table = pd.read_csv(run / "metrics" / "baseline" / method / "shard-0.csv")
        assert len(table) == N_IMAGES
        assert set(DEFAULT_COLUMNS + tuple(ADDED)) <= set(table.columns), method
        assert np.isfinite(table[ADDED].to_numpy(dtype=float)).all(), method
        recorded = json.loads(table["metric_params"].iloc[0])
        assert table["metric_params"].nunique() == 1
        for group, given in PARAMS_GIVEN.items():
            assert recorded[group] == {**PARAMS[group], **given}, group
        for group in ("road", "faithfulness_correlation", "monotonicity_correlation"):
            assert recorded[group]["seed"] == 0  # every draw's seed is on record
        assert recorded["effective_complexity"] == PARAMS["effective_complexity"]
        # values in their ranges: fractions scaled to percent, correlations in [-1, 1]
        assert table["sparseness"].between(0, 1).all()
        assert table["effective_complexity"].between(0, 100).all()
        assert (
            table[["faithfulness_correlation", "monotonicity_correlation"]].abs().le(1).all().all()
        )
        assert table[["road_morf", "road_lerf"]].stack().between(0, 100).all()
        np.testing.assert_allclose(
            table["road"], table["road_lerf"] - table["road_morf"], atol=1e-3
        )


def test_summary_tables_have_the_added_columns(run):
    summary = pd.read_csv(run / "summary.csv").set_index("method")
    assert set(summary.index) == set(METHODS)
    for column in ADDED:
        assert column in summary.columns, column
        assert np.isfinite(summary[column].to_numpy(dtype=float)).all(), column
    markdown = (run / "summary.md").read_text()
    for column in ADDED:
        assert BY_COLUMN[column].header in markdown, column
