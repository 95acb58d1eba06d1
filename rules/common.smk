# The configuration, parsed once (cambench.specs), and the names every rule file uses.
# All config logic lives here; the other rule files only wire paths and params.
import math
import re
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))  # import this checkout

from cambench.data import preparation_config
from cambench.data.augment import resolve_augment
from cambench.models import weights_file
from cambench.provenance import model_digest, stage_digest
from cambench.runtime import pick_device
from cambench.specs import (
    apply_experiment,
    as_json,
    check_schema,
    parse_config,
    reference_pairs,
    statistics_dict,
)

apply_experiment(config, workflow.config_settings.overwrite_config)
try:
    check_schema(config)  # one line naming the key, not the validator's dump
except ValueError as err:
    raise ValueError(f"invalid configuration: {err}") from None
validate(config, "../workflow/schemas/config.schema.yaml")
try:
    EXP = parse_config(config)
except ValueError as err:
    raise ValueError(f"invalid configuration: {err}") from None


def check_local_device(device):
    """Fail before any job runs when ``device`` (the config's) names CUDA that this
    machine lacks; called by the Snakefile's ``onstart`` for jobs that run here."""
    try:
        pick_device(device)
    except RuntimeError as err:
        raise WorkflowError(
            f"config key 'device': {err}. Use device: auto or cpu here, or submit the "
            "jobs to GPU nodes (--profile profiles/slurm)"
        ) from None


RESULTS = f"results/{EXP.name}"
LOGS = f"logs/{EXP.name}"
BENCH = f"benchmarks/runs/{EXP.name}"
MODELS = list(EXP.models)
METHODS = list(EXP.methods)
SHARDS = list(range(EXP.eval.shards))
GPU = 0 if EXP.device == "cpu" else 1
ENV = "../envs/cambench.yaml"
# Rules run `python -m cambench` from this checkout, whether or not it is pip-installed
# (and inside a conda env that holds only the dependencies).
PACKAGE_DIR = str(Path(workflow.basedir) / "workflow")
# Every job loads the config's plug-ins (cambench.plugins) before it runs.
PLUGINS_ENV = (
    shlex.quote(as_json(list(EXP.plugins))).replace("{", "{{").replace("}", "}}")
)
# Quoted for the shell (a checkout path with spaces, quotes or `$(...)` stays one
# literal word) and with braces doubled for Snakemake's formatting.
PACKAGE_DIR_SH = shlex.quote(PACKAGE_DIR).replace("{", "{{").replace("}", "}}")
shell.prefix(
    "set -euo pipefail; export PYTHONPATH="
    + PACKAGE_DIR_SH
    + "${{PYTHONPATH:+:$PYTHONPATH}}; export CAMBENCH_PLUGINS="
    + PLUGINS_ENV
    + "; "
)


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    method="|".join(map(re.escape, METHODS)),
    shard=r"\d+",


def one_of(names):
    """A wildcard constraint matching exactly ``names`` (none: matches nothing)."""
    return "|".join(map(re.escape, names)) or "(?!)"


# Evaluation-only models (kind: pretrained) are converted (rule convert), the others trained.
PRETRAINED = [m for m in MODELS if EXP.models[m].is_pretrained]
TRAINED = [m for m in MODELS if not EXP.models[m].is_pretrained]


def model_json(wildcards):
    """The model's training config (its evaluation `layer` is the eval jobs' param)."""
    return as_json(EXP.models[wildcards.model].training_config)


def train_code(wildcards):
    """The train job's code digest, with the plug-in file of the model's arch."""
    return model_digest("train", EXP.models[wildcards.model].config)


def convert_code(wildcards):
    return model_digest("convert", EXP.models[wildcards.model].config)


def train_processes(wildcards):
    """A model's training processes (`gpus`); more than one runs torchrun data-parallel
    on one node, one process per GPU, each with its own copy of the data."""
    return EXP.models[wildcards.model].gpus


def base_checkpoint(wildcards):
    base = EXP.models[wildcards.model].base
    return [f"{RESULTS}/models/{base}.pt"] if base else []


def weights_input(wildcards):
    """A model initialized from a local state dict (weights: <path>) depends on it;
    torchvision weights names are read from the torch hub cache at run time."""
    path = weights_file(EXP.models[wildcards.model].config)
    return [path] if path else []


# What data preparation reads: the dataset without `augment`, a training setting
# (changing it retrains every model, without re-preparing the data).
DATASET_JSON = as_json(preparation_config(EXP.dataset))
AUGMENT_JSON = as_json(resolve_augment(EXP.dataset))


def registered_method(wildcards):
    """The method a `methods:` entry runs (its `method:` key; by default its label)."""
    return EXP.method_of(wildcards.method)


def method_json(wildcards):
    """The entry's parameters; a variant's (label != method) also carry the method it
    runs under "method", which the jobs take out (the default run's stay as they were).
    """
    params, method = EXP.methods[wildcards.method], registered_method(wildcards)
    return as_json(
        params if method == wildcards.method else {**params, "method": method}
    )


def saliency_code(wildcards):
    """Digest of the code that computes this method's maps (Snakemake does not
    track imported modules; a changed digest is a changed param: a rerun): the
    registered method's, whatever the entry's label."""
    return stage_digest("saliency", registered_method(wildcards))


def model_layer(wildcards):
    return EXP.models[wildcards.model].layer


def expected_saliency(wildcards):
    """What a metrics job checks its saliency file against."""
    return as_json(
        {
            "model": wildcards.model,
            "method": wildcards.method,
            "params": EXP.methods[wildcards.method],
            "shard": int(wildcards.shard),
            "shards": EXP.eval.shards,
            "n_images": EXP.eval.n_images,
        }
        # a variant's file also records the method it ran (absent in the default run)
        | (
            {"registered_method": registered_method(wildcards)}
            if registered_method(wildcards) != wildcards.method
            else {}
        )
    )


def per_method(pattern, model, shards=SHARDS):
    """``pattern`` filled for every applicable method (and shard) of ``model``."""
    return [
        pattern.format(model=model, method=m, shard=s)
        for m in EXP.methods_for(model)
        for s in shards
    ]


def per_pair(pattern, shards=SHARDS):
    """``pattern`` filled for every applicable model × method (and shard)."""
    return [path for model in MODELS for path in per_method(pattern, model, shards)]


RANDOMIZATION_CSVS = [
    f"{RESULTS}/sanity/{model}/{method}.csv" for model, method in EXP.sanity_pairs()
]
# The optional checks beside it (sanity.random_logit, smooth_mprt, efficient_mprt): a
# CSV per model x method, none when all are off.
SANITY_CHECKS = EXP.sanity.checks or {}
SANITY_CHECK_CSVS = [
    f"{RESULTS}/sanity/{model}/{method}.checks.csv"
    for model, method in (EXP.sanity_pairs() if SANITY_CHECKS else [])
]
# The data randomization check (rules/datarand.smk; none when sanity.data_randomization
# is absent): per method a one-row CSV and an example file for the figure.
DATARAND = EXP.sanity.data_randomization
DATARAND_CSVS = [
    f"{RESULTS}/sanity/data-randomization/{model}/{method}.csv"
    for model, method in EXP.data_randomization_pairs()
]
DATARAND_EXAMPLES = [p.removesuffix(".csv") + ".npz" for p in DATARAND_CSVS]


def datarand_model_json(wildcards):
    """The model's training config, with the check's own epochs where it sets them."""
    config = dict(EXP.models[wildcards.model].training_config)
    if DATARAND.epochs is not None:
        config["epochs"] = DATARAND.epochs
    return as_json(config)


# The summarize command's extra argument: empty (the command unchanged) when it is off.
DATARAND_SUMMARY_ARG = (
    " --data-randomization {input.data_randomization:q}" if DATARAND_CSVS else ""
)
SANITY_CHECKS_SUMMARY_ARG = (
    " --sanity-checks {input.sanity_checks:q}" if SANITY_CHECK_CSVS else ""
)
# ROAR/KAR (rules/roar.smk; none when protocols.roar is absent): its section of the
# summary, and the summarize command's extra argument (empty when it is off).
ROAR_SUMMARY = [f"{RESULTS}/roar.md"] if EXP.roar else []
ROAR_SUMMARY_ARG = " --roar {input.roar:q}" if ROAR_SUMMARY else ""
COMPARISON_PAIRS = as_json(reference_pairs(EXP.models))
METRICS_SETTINGS = as_json(EXP.metrics.job_settings())
# What the summary checks every input against (a restored copy of old results fails).
SUMMARY_EXPECT = as_json(
    {
        "models": {name: spec.training_config for name, spec in EXP.models.items()},
        "methods": EXP.methods,
        "metrics": EXP.metrics.job_settings(),
    }
)
STATISTICS = as_json(statistics_dict(EXP.metrics.statistics))

# The figures: one for the experiment each, and one per model of the per-model kinds
# (cambench.jobs.plot.FIGURES draws them). Inputs per figure name.
EXPERIMENT_FIGURES = {
    "summary_heatmap": [f"{RESULTS}/summary.csv"],
    "metric_bars": [f"{RESULTS}/summary.csv"],
    "rank_heatmap": [f"{RESULTS}/ranks.csv"],
}
if TRAINED:  # training curves: converted models have none
    EXPERIMENT_FIGURES["training"] = [f"{RESULTS}/models/{m}.json" for m in TRAINED]
if RANDOMIZATION_CSVS:
    EXPERIMENT_FIGURES["randomization"] = RANDOMIZATION_CSVS
if DATARAND_EXAMPLES:
    EXPERIMENT_FIGURES["data_randomization"] = DATARAND_EXAMPLES
MODEL_FIGURES = {
    "curves": f"{RESULTS}/metrics/{{model}}/{{method}}/shard-{{shard}}.npz",
    "distributions": f"{RESULTS}/metrics/{{model}}/{{method}}/shard-{{shard}}.csv",
    "saliency_grid": f"{RESULTS}/saliency/{{model}}/{{method}}/shard-{{shard}}.h5",
}


def model_figure_inputs(wildcards):
    shards = [0] if wildcards.figure == "saliency_grid" else SHARDS
    return per_method(MODEL_FIGURES[wildcards.figure], wildcards.model, shards)


PLOTS = [f"{RESULTS}/plots/{name}.png" for name in EXPERIMENT_FIGURES] + [
    f"{RESULTS}/plots/{figure}_{model}.png"
    for figure in MODEL_FIGURES
    for model in MODELS
]


# The report's sections (snakemake --report), in the order of the stages, numbered over
# those this experiment has: training curves only with a trained model, the sanity check
# only when it runs. workflow/report/workflow.rst lists the sections the report holds.
_SECTIONS = [
    ("Training", ["training"]),
    ("Saliency maps", ["saliency_grid"]),
    ("Metrics", ["metric_bars", "curves", "distributions"]),
    ("Tables", ["summary_heatmap", "rank_heatmap"]),
    ("Sanity check", ["randomization", "data_randomization"]),
    ("ROAR and KAR", ["roar"]),
]
# the figures this experiment draws: rules/plots.smk's, and roar_aggregate's (roar.smk)
_DRAWN = (
    set(EXPERIMENT_FIGURES) | set(MODEL_FIGURES) | ({"roar"} if EXP.roar else set())
)
_PRESENT = [
    (title, figures)
    for title, figures in _SECTIONS
    if title == "Tables" or set(figures) & _DRAWN
]
REPORT_SECTIONS = {title: f"{i}. {title}" for i, (title, _) in enumerate(_PRESENT, 1)}
FIGURE_SECTIONS = {
    figure: REPORT_SECTIONS[title] for title, figures in _PRESENT for figure in figures
}


def report_section(wildcards):
    """The report section of a figure (its category in snakemake --report)."""
    return FIGURE_SECTIONS[wildcards.figure]


# `snakemake --report` gathers the results a run made; without them it would name one
# missing file. Say which run makes them (the report runs no job).
if any(arg == "--report" or arg.startswith("--report=") for arg in sys.argv):
    _missing = [p for p in [f"{RESULTS}/summary.csv", *PLOTS] if not Path(p).exists()]
    if _missing:
        raise WorkflowError(
            f"snakemake --report gathers the results of experiment {EXP.name!r} under "
            f"{RESULTS}/, but {len(_missing)} are missing (first: {_missing[0]}). Run the "
            "experiment first with the same config: `snakemake --cores all` for the "
            "default experiment, `snakemake --cores all --configfile <file>` for another "
            "(then `snakemake --report report.html --configfile <file>`)"
        )


# On a cluster (profiles/slurm) a shard's saliency job and its metrics job form one
# submitted job (group eval-<model>-<method>). Peak memory of a saliency or metrics job
# does not grow with the split (reads are batch by batch) but with the images of its
# largest forward batch: about 1 GB for the process and 250 bytes per image pixel in
# that batch (benchmarks/results/memory-cpu.txt: the default model at 224 px, Score-CAM
# with 256 masked images per forward 3.8 GB, metrics with 128 2.6 GB; at 32 px every
# job stays near 1 GB). A GPU job keeps 2 GB more for the CUDA libraries. Models much
# wider than the default need more: raise it with set-resources (profiles/slurm).
def eval_mem_mb(batch):
    pixels = int(EXP.dataset["image_size"]) ** 2
    estimate = 1000 + 250 * batch * pixels / 1e6 + (0 if GPU == 0 else 2000)
    return max(2000 if GPU == 0 else 4000, 500 * math.ceil(estimate / 500))


def saliency_mem_mb(wildcards):
    """A shard's saliency job: its batch, or the method's own forward batch."""
    own = EXP.methods[wildcards.method].get("batch_size", 0)
    return eval_mem_mb(max(EXP.eval.batch_size, int(own or 0)))


METRICS_MEM_MB = eval_mem_mb(max(EXP.eval.batch_size, EXP.metrics.forward_batch_size))
# Maps that need no model forward when the class explained is the label; under
# `device: auto` their saliency job asks for no GPU (it runs on the CPU, same maps).
NO_FORWARD_METHODS = ("fakecam", "random", "mask_oracle")


def saliency_gpus(wildcards):
    cheap = (
        registered_method(wildcards) in NO_FORWARD_METHODS
        and EXP.eval.target == "label"
    )
    return 0 if cheap and EXP.device == "auto" else GPU


def _train_threads():
    """The train job's thread count as it will run: 4 (or --set-threads train=N, capped
    by --max-threads), capped by --cores as Snakemake caps every job's threads, cluster
    jobs included. CPU training is bit-reproducible for one thread count only, so it is
    also a param of the train job: another count retrains."""
    settings = workflow.resource_settings
    threads = int(settings.overwrite_threads.get("train", 4))
    if settings.max_threads:
        threads = min(threads, int(settings.max_threads))
    return min(threads, int(settings.cores))


TRAIN_THREADS = _train_threads()
