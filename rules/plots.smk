# Figures (cambench.jobs.plot.FIGURES draws them): every figure is a PNG (shown in the
# report, with the caption of its kind) and a PDF beside it.


rule plot_experiment:
    input:
        lambda w: EXPERIMENT_FIGURES[w.figure],
    output:
        png=report(
            f"{RESULTS}/plots/{{figure}}.png",
            caption="../workflow/report/figure.rst",
            category=report_section,
            subcategory="all models",
            labels={"figure": "{figure}"},
        ),
        pdf=f"{RESULTS}/plots/{{figure}}.pdf",
    log:
        f"{LOGS}/plots/{{figure}}.log",
    benchmark:
        f"{BENCH}/plots/{{figure}}.tsv"
    wildcard_constraints:
        figure="|".join(EXPERIMENT_FIGURES),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=stage_digest("plots"),
        threshold=EXP.sanity.threshold,
    shell:
        "python -m cambench plot {wildcards.figure:q} {input:q} --threshold {params.threshold:q}"
        " --out {output.png:q} > {log:q} 2>&1"


rule plot_model:
    input:
        data=f"{RESULTS}/data/test.h5",
        results=model_figure_inputs,
    output:
        png=report(
            f"{RESULTS}/plots/{{figure}}_{{model}}.png",
            caption="../workflow/report/figure.rst",
            category=report_section,
            subcategory="{model}",
            labels={"figure": "{figure}"},
        ),
        pdf=f"{RESULTS}/plots/{{figure}}_{{model}}.pdf",
    log:
        f"{LOGS}/plots/{{figure}}_{{model}}.log",
    benchmark:
        f"{BENCH}/plots/{{figure}}_{{model}}.tsv"
    wildcard_constraints:
        figure="|".join(MODEL_FIGURES),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=stage_digest("plots"),
        n_images=EXP.grid_images,
    shell:
        "python -m cambench plot {wildcards.figure:q} {input.results:q} --data {input.data:q}"
        " --n-images {params.n_images:q} --title {wildcards.model:q} --out {output.png:q} > {log:q} 2>&1"
