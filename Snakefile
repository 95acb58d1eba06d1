"""cambench: saliency-map interpretability benchmark (see README.md)."""

from snakemake.utils import min_version, validate

min_version("8.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/convert.smk"
include: "rules/saliency.smk"
include: "rules/metrics.smk"
include: "rules/plots.smk"


report: "workflow/report/workflow.rst"


# Jobs that need neither a GPU nor a cluster node run where snakemake runs.
localrules:
    all,
    prepare_data,
    summarize,
    plot_experiment,
    plot_model,


rule all:
    default_target: True
    input:
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/summary.md",
        PLOTS,
