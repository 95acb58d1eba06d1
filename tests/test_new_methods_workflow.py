"""End to end: the input attributions and the newer CAMs through Snakemake on the tiny
experiment (a few images, cheap parameters), randomization check included."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from conftest import SMALL_RESNET_CASCADE, copy_of_run, snakemake

from cambench.cache import read_saliency

pytestmark = pytest.mark.slow

METHODS = {
    "integrated_gradients": {"steps": 4},
    "smoothgrad": {"samples": 2},
    "rise": {"masks": 64},
    "occlusion": {"window": 8, "stride": 8},
    "hirescam": {},
    "eigencam": {},
}
N_IMAGES = 4


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_run_template):
    # on a copy of the finished tiny run: its data and model are reused
    workdir = copy_of_run(tiny_run_template, tmp_path_factory.mktemp("new_methods") / "run")
    config = yaml.safe_load((workdir / "tiny.yaml").read_text())
    config["methods"] = METHODS
    config["eval"].update(n_images=N_IMAGES, shards=1, batch_size=N_IMAGES)
    config["sanity"] = {"randomization": True, "n_images": N_IMAGES, "methods": list(METHODS)}
    (workdir / "new.yaml").write_text(yaml.safe_dump(config))
    snakemake(workdir, "--cores", "2", "--configfile", "new.yaml")
    return workdir / "results" / "tiny"


def test_maps_exist_with_their_parameters(run):
    for method, params in METHODS.items():
        cache = read_saliency(run / "saliency" / "baseline" / method / "shard-0.h5")
        assert cache.maps.shape == (N_IMAGES, 32, 32), method
        assert cache.attrs["method"] == method
        for key, value in params.items():
            assert cache.params[key] == value, (method, key)


def test_per_image_metrics_have_a_row_per_image(run):
    for method in METHODS:
        table = pd.read_csv(run / "metrics" / "baseline" / method / "shard-0.csv")
        assert len(table) == N_IMAGES, method
        assert table.select_dtypes("number").notna().all().all(), method


def test_summary_lists_them_with_the_randomization_check(run):
    summary = pd.read_csv(run / "summary.csv").set_index("method")
    assert set(summary.index) == set(METHODS)
    # every method ran the check: a flag per method, no method left out
    assert summary["model_independent"].notna().all()
    markdown = (run / "summary.md").read_text()
    for method in METHODS:
        assert method in markdown, method
        cascade = pd.read_csv(run / "sanity" / "baseline" / f"{method}.csv")
        assert list(cascade["randomized"]) == ["none", *SMALL_RESNET_CASCADE], method
