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
include: "rules/datarand.smk"
include: "rules/roar.smk"
include: "rules/plots.smk"


report: "workflow/report/workflow.rst"


# `device: cuda` on a machine without CUDA fails here, before any job has removed
# an output it would rewrite, when the jobs run on this machine; on a cluster the
# jobs run elsewhere and each checks its own node.
onstart:
    if workflow.local_exec:
        check_local_device(EXP.device)


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
        ROAR_TARGETS,
