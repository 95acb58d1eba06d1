rule plot_summary:
    input:
        f"{RESULTS}/summary.csv",
    output:
        report(
            f"{RESULTS}/plots/summary_heatmap.png",
            caption="../workflow/report/summary_heatmap.rst",
            category="Summary",
        ),
    log:
        f"{LOGS}/plots/summary_heatmap.log",
    benchmark:
        f"{BENCH}/plots/summary_heatmap.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=stage_digest("plots"),
    shell:
        "python -m cambench plot heatmap {input:q} --out {output:q} > {log:q} 2>&1"


rule plot_curves:
    input:
        expand(
            f"{RESULTS}/metrics/{{{{model}}}}/{{method}}/shard-{{shard}}.npz",
            method=METHODS,
            shard=SHARDS,
        ),
    output:
        report(
            f"{RESULTS}/plots/curves_{{model}}.png",
            caption="../workflow/report/curves.rst",
            category="Faithfulness",
            subcategory="{model}",
        ),
    log:
        f"{LOGS}/plots/curves_{{model}}.log",
    benchmark:
        f"{BENCH}/plots/curves_{{model}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=stage_digest("plots"),
    shell:
        "python -m cambench plot curves {input:q} --title {wildcards.model} --out {output:q} > {log:q} 2>&1"


rule plot_saliency_grid:
    input:
        data=f"{RESULTS}/data/test.h5",
        saliency=expand(
            f"{RESULTS}/saliency/{{{{model}}}}/{{method}}/shard-0.h5", method=METHODS
        ),
    output:
        report(
            f"{RESULTS}/plots/saliency_grid_{{model}}.png",
            caption="../workflow/report/saliency_grid.rst",
            category="Saliency maps",
            subcategory="{model}",
        ),
    log:
        f"{LOGS}/plots/saliency_grid_{{model}}.log",
    benchmark:
        f"{BENCH}/plots/saliency_grid_{{model}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=stage_digest("plots"),
        n_images=config.get("plots", {}).get("grid_images", 6),
    shell:
        "python -m cambench plot grid {input.saliency:q} --data {input.data:q} --n-images {params.n_images}"
        " --title {wildcards.model} --out {output:q} > {log:q} 2>&1"


rule plot_training:
    input:
        expand(f"{RESULTS}/models/{{model}}.json", model=MODELS),
    output:
        report(
            f"{RESULTS}/plots/training.png",
            caption="../workflow/report/training.rst",
            category="Training",
        ),
    log:
        f"{LOGS}/plots/training.log",
    benchmark:
        f"{BENCH}/plots/training.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=stage_digest("plots"),
    shell:
        "python -m cambench plot training {input:q} --out {output:q} > {log:q} 2>&1"
