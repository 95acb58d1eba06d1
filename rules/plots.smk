# Figures: every rule writes a PNG (shown in the report) and a PDF beside it.


localrules:
    plot_bars,
    plot_distributions,
    plot_randomization,


rule plot_summary:
    input:
        f"{RESULTS}/summary.csv",
    output:
        png=report(
            f"{RESULTS}/plots/summary_heatmap.png",
            caption="../workflow/report/summary_heatmap.rst",
            category="4. Tables",
            labels={"table": "summary (heatmap)"},
        ),
        pdf=f"{RESULTS}/plots/summary_heatmap.pdf",
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
        "python -m cambench plot heatmap {input:q} --out {output.png:q} > {log:q} 2>&1"


rule plot_bars:
    input:
        f"{RESULTS}/summary.csv",
    output:
        png=report(
            f"{RESULTS}/plots/metric_bars.png",
            caption="../workflow/report/metric_bars.rst",
            category="3. Metrics",
            subcategory="all models",
        ),
        pdf=f"{RESULTS}/plots/metric_bars.pdf",
    log:
        f"{LOGS}/plots/metric_bars.log",
    benchmark:
        f"{BENCH}/plots/metric_bars.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=stage_digest("plots"),
    shell:
        "python -m cambench plot bars {input:q} --out {output.png:q} > {log:q} 2>&1"


rule plot_curves:
    input:
        lambda w: per_method(
            f"{RESULTS}/metrics/{{model}}/{{method}}/shard-{{shard}}.npz", w.model
        ),
    output:
        png=report(
            f"{RESULTS}/plots/curves_{{model}}.png",
            caption="../workflow/report/curves.rst",
            category="3. Metrics",
            subcategory="{model}",
        ),
        pdf=f"{RESULTS}/plots/curves_{{model}}.pdf",
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
        "python -m cambench plot curves {input:q} --title {wildcards.model} --out {output.png:q} > {log:q} 2>&1"


rule plot_distributions:
    input:
        lambda w: per_method(
            f"{RESULTS}/metrics/{{model}}/{{method}}/shard-{{shard}}.csv", w.model
        ),
    output:
        png=report(
            f"{RESULTS}/plots/distributions_{{model}}.png",
            caption="../workflow/report/distributions.rst",
            category="3. Metrics",
            subcategory="{model}",
        ),
        pdf=f"{RESULTS}/plots/distributions_{{model}}.pdf",
    log:
        f"{LOGS}/plots/distributions_{{model}}.log",
    benchmark:
        f"{BENCH}/plots/distributions_{{model}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=stage_digest("plots"),
    shell:
        "python -m cambench plot distributions {input:q} --title {wildcards.model} --out {output.png:q} > {log:q} 2>&1"


rule plot_saliency_grid:
    input:
        data=f"{RESULTS}/data/test.h5",
        saliency=lambda w: per_method(
            f"{RESULTS}/saliency/{{model}}/{{method}}/shard-{{shard}}.h5",
            w.model,
            shards=[0],
        ),
    output:
        png=report(
            f"{RESULTS}/plots/saliency_grid_{{model}}.png",
            caption="../workflow/report/saliency_grid.rst",
            category="2. Saliency maps",
            subcategory="{model}",
        ),
        pdf=f"{RESULTS}/plots/saliency_grid_{{model}}.pdf",
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
        " --title {wildcards.model} --out {output.png:q} > {log:q} 2>&1"


rule plot_training:
    input:
        expand(f"{RESULTS}/models/{{model}}.json", model=MODELS),
    output:
        png=report(
            f"{RESULTS}/plots/training.png",
            caption="../workflow/report/training.rst",
            category="1. Training",
        ),
        pdf=f"{RESULTS}/plots/training.pdf",
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
        "python -m cambench plot training {input:q} --out {output.png:q} > {log:q} 2>&1"


rule plot_randomization:
    input:
        RANDOMIZATION_CSVS,
    output:
        png=report(
            f"{RESULTS}/plots/randomization.png",
            caption="../workflow/report/randomization.rst",
            category="5. Sanity check",
        ),
        pdf=f"{RESULTS}/plots/randomization.pdf",
    log:
        f"{LOGS}/plots/randomization.log",
    benchmark:
        f"{BENCH}/plots/randomization.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=stage_digest("plots"),
        threshold=SANITY.get("threshold", 0.99),
    shell:
        "python -m cambench plot randomization {input:q} --threshold {params.threshold}"
        " --out {output.png:q} > {log:q} 2>&1"
