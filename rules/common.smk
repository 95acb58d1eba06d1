# Configuration checks, names and helpers shared by every rule file.
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))  # import this checkout

from cambench.config import (
    apply_experiment,
    as_json,
    check_config,
    method_applies,
    method_params,
)
from cambench.provenance import stage_digest

apply_experiment(config, workflow.config_settings.overwrite_config)
validate(config, "../workflow/schemas/config.schema.yaml")
try:
    check_config(config)
except ValueError as err:
    raise ValueError(f"invalid configuration: {err}") from None

EXPERIMENT = config["experiment"]
RESULTS = f"results/{EXPERIMENT}"
LOGS = f"logs/{EXPERIMENT}"
BENCH = f"benchmarks/runs/{EXPERIMENT}"
MODELS = list(config["models"])
METHODS = list(config["methods"])
SHARDS = list(range(config["eval"]["shards"]))
GPU = 0 if config["device"] == "cpu" else 1
ENV = "../envs/cambench.yaml"
# Rules run `python -m cambench` from this checkout, whether or not it is pip-installed
# (and inside a conda env that holds only the dependencies).
PACKAGE_DIR = str(Path(workflow.basedir) / "workflow")
shell.prefix(
    "set -euo pipefail; export PYTHONPATH="
    + PACKAGE_DIR
    + "${{PYTHONPATH:+:$PYTHONPATH}}; "
)


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    method="|".join(map(re.escape, METHODS)),
    shard=r"\d+",


def model_json(wildcards):
    return as_json(config["models"][wildcards.model])


def train_processes(wildcards):
    """A model's training processes: its `gpus` key (default 1); more than one runs
    torchrun data-parallel on one node, one process per GPU, each with its own copy
    of the data (so memory scales too)."""
    return config["models"][wildcards.model].get("gpus", 1)


def method_json(wildcards):
    return as_json(method_params(config, wildcards.method))


def saliency_code(wildcards):
    """Digest of the code that computes this method's maps (Snakemake does not
    track imported modules; a changed digest is a changed param: a rerun)."""
    return stage_digest("saliency", wildcards.method)


def model_layer(wildcards):
    return config["models"][wildcards.model].get("layer", "")


def methods_for(model):
    """The configured methods that apply to ``model`` (see cambench.config.method_applies)."""
    return [m for m in METHODS if method_applies(config["models"][model], m)]


def per_method(pattern, model, shards=SHARDS):
    """``pattern`` filled for every applicable method (and shard) of ``model``."""
    return [
        pattern.format(model=model, method=m, shard=s)
        for m in methods_for(model)
        for s in shards
    ]


def per_pair(pattern, shards=SHARDS):
    """``pattern`` filled for every applicable model × method (and shard)."""
    return [path for model in MODELS for path in per_method(pattern, model, shards)]


PLOTS = (
    [
        f"{RESULTS}/plots/summary_heatmap.png",
        f"{RESULTS}/plots/metric_bars.png",
        f"{RESULTS}/plots/training.png",
    ]
    + expand(f"{RESULTS}/plots/curves_{{model}}.png", model=MODELS)
    + expand(f"{RESULTS}/plots/distributions_{{model}}.png", model=MODELS)
    + expand(f"{RESULTS}/plots/saliency_grid_{{model}}.png", model=MODELS)
    + (
        [f"{RESULTS}/plots/randomization.png"]
        if (config.get("sanity") or {}).get("randomization")
        else []
    )
)
