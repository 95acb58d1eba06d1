"""Bad ``metrics.include`` / ``metrics.params`` fail at config time (parse_config, before
any job) with a message naming the key at fault."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from cambench.metric_table import PARAMS, check_values, resolve_include, resolve_params
from cambench.specs import SCHEMA, apply_experiment, parse_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_config():
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    tiny = yaml.safe_load((ROOT / "tests" / "config.tiny.yaml").read_text())
    return apply_experiment({**base, **tiny}, tiny)


def _parse(config, metrics):
    from snakemake.utils import validate

    cfg = copy.deepcopy(config)
    cfg["metrics"] = {**cfg["metrics"], **metrics}
    validate(cfg, str(SCHEMA), set_default=True)  # as the Snakefile does
    return parse_config(cfg)


def test_valid_families_parse(tiny_config):
    spec = _parse(
        tiny_config,
        {"include": ["default", "faithfulness", "complexity"], "params": {"irof": {"cells": 4}}},
    )
    settings = spec.metrics.job_settings()
    assert {"road", "irof", "sparseness", "effective_complexity"} <= set(settings["include"])
    assert settings["metric_params"]["irof"] == {**PARAMS["irof"], "cells": 4}
    assert settings["metric_params"]["road"]["seed"] == 0  # every seed recorded


def test_unknown_metric(tiny_config):
    with pytest.raises(ValueError, match=r"'metrics\.include': unknown metric 'nonexistent'"):
        _parse(tiny_config, {"include": ["nonexistent"]})


def test_parameter_a_metric_does_not_take(tiny_config):
    with pytest.raises(ValueError, match=r"'metrics\.params\.irof\.noise'.*valid: cells"):
        _parse(tiny_config, {"include": ["irof"], "params": {"irof": {"noise": 0.1}}})
    with pytest.raises(ValueError, match=r"'metrics\.params\.sparseness\.eps'.*valid: none"):
        _parse(tiny_config, {"include": ["sparseness"], "params": {"sparseness": {"eps": 0.1}}})
    with pytest.raises(ValueError, match=r"'metrics\.params\.rood'"):
        _parse(tiny_config, {"include": ["road"], "params": {"rood": {}}})


@pytest.mark.parametrize(
    ("group", "values", "key"),
    [
        ("road", {"percentages": [0, 50]}, "percentages"),
        ("road", {"percentages": [50, 100]}, "percentages"),
        ("road", {"percentages": []}, "percentages"),
        ("road", {"noise": -0.1}, "noise"),
        ("road", {"weights": [1.0]}, "weights"),
        ("road", {"score": "logits"}, "score"),
        ("road", {"seed": -1}, "seed"),
        ("faithfulness_correlation", {"subset_size": 0}, "subset_size"),
        ("faithfulness_correlation", {"n_subsets": 1}, "n_subsets"),
        ("faithfulness_correlation", {"baseline": "blur"}, "baseline"),
        ("monotonicity_correlation", {"pixels_per_step": 0}, "pixels_per_step"),
        ("monotonicity_correlation", {"low": 1.0, "high": 1.0}, "high"),
        ("monotonicity_correlation", {"n_samples": 0}, "n_samples"),
        ("irof", {"cells": 0}, "cells"),
        ("effective_complexity", {"eps": -1.0}, "eps"),
    ],
)
def test_out_of_range_values(group, values, key):
    with pytest.raises(ValueError, match=rf"'metrics\.params\.{group}\.{key}'"):
        resolve_params({group: values}, resolve_include([group]))


def test_out_of_range_at_config_time(tiny_config):
    size = int(tiny_config["dataset"]["image_size"])
    with pytest.raises(ValueError, match=r"'metrics\.params\.road\.percentages'.*\(0, 100\)"):
        _parse(tiny_config, {"include": ["road"], "params": {"road": {"percentages": [10, 100]}}})
    with pytest.raises(ValueError, match=r"'metrics\.params\.faithfulness_correlation\.subset"):
        _parse(
            tiny_config,
            {
                "include": ["faithfulness_correlation"],
                "params": {"faithfulness_correlation": {"subset_size": 0}},
            },
        )
    # limits in pixels: against dataset.image_size
    with pytest.raises(ValueError, match=rf"'metrics\.params\.irof\.cells'.*\({size}\)"):
        _parse(tiny_config, {"include": ["irof"], "params": {"irof": {"cells": size + 1}}})
    with pytest.raises(ValueError, match=r"subset_size'.*dataset\.image_size"):
        _parse(
            tiny_config,
            {
                "include": ["faithfulness_correlation"],
                "params": {"faithfulness_correlation": {"subset_size": size * size + 1}},
            },
        )


def test_defaults_are_in_range():
    for group, values in PARAMS.items():
        check_values(group, dict(values), 32)
