# Scoring: per-image metrics per shard, the randomization sanity check, the tables.


rule metrics:
    input:
        model=f"{RESULTS}/models/{{model}}.pt",
        data=f"{RESULTS}/data/test.h5",
        saliency=f"{RESULTS}/saliency/{{model}}/{{method}}/shard-{{shard}}.h5",
    output:
        csv=f"{RESULTS}/metrics/{{model}}/{{method}}/shard-{{shard}}.csv",
        curves=f"{RESULTS}/metrics/{{model}}/{{method}}/shard-{{shard}}.npz",
    log:
        f"{LOGS}/metrics/{{model}}/{{method}}/shard-{{shard}}.log",
    benchmark:
        f"{BENCH}/metrics/{{model}}/{{method}}/shard-{{shard}}.tsv"
    group:
        "eval-{model}-{method}"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=METRICS_MEM_MB,
        runtime=120,
        gpu=GPU,
    params:
        code=stage_digest("metrics"),
        metrics=METRICS_SETTINGS,
        expect=expected_saliency,
        batch_size=EXP.eval.batch_size,
        device=EXP.device,
    shell:
        "python -m cambench metrics --model {input.model:q} --model-name {wildcards.model:q} --data {input.data:q}"
        " --saliency {input.saliency:q} --metrics {params.metrics:q} --expect {params.expect:q}"
        " --batch-size {params.batch_size:q} --device {params.device:q} --threads {threads:q}"
        " --out-csv {output.csv:q} --out-curves {output.curves:q} > {log:q} 2>&1"


rule randomization:
    input:
        model=f"{RESULTS}/models/{{model}}.pt",
        data=f"{RESULTS}/data/test.h5",
    output:
        f"{RESULTS}/sanity/{{model}}/{{method}}.csv",
    log:
        f"{LOGS}/sanity/{{model}}/{{method}}.log",
    benchmark:
        f"{BENCH}/sanity/{{model}}/{{method}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=GPU,
    params:
        code=lambda w: stage_digest("sanity", registered_method(w)),
        method=method_json,
        layer=model_layer,
        n_images=EXP.sanity.n_images,
        seed=EXP.sanity.seed,
        threshold=EXP.sanity.threshold,
        statistics=STATISTICS,
        target=EXP.eval.target,
        batch_size=EXP.eval.batch_size,
        device=EXP.device,
    shell:
        "python -m cambench randomization --model {input.model:q} --model-name {wildcards.model:q}"
        " --data {input.data:q} --method {wildcards.method:q} --params {params.method:q}"
        " --layer={params.layer:q} --n-images {params.n_images:q} --target {params.target:q}"
        " --batch-size {params.batch_size:q} --seed {params.seed:q} --threshold {params.threshold:q}"
        " --statistics {params.statistics:q} --device {params.device:q} --threads {threads:q}"
        " --out {output:q} > {log:q} 2>&1"


rule sanity_checks:
    input:
        model=f"{RESULTS}/models/{{model}}.pt",
        data=f"{RESULTS}/data/test.h5",
    output:
        f"{RESULTS}/sanity/{{model}}/{{method}}.checks.csv",
    log:
        f"{LOGS}/sanity/{{model}}/{{method}}.checks.log",
    benchmark:
        f"{BENCH}/sanity/{{model}}/{{method}}.checks.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=GPU,
    params:
        code=lambda w: stage_digest("sanity", registered_method(w)),
        method=method_json,
        layer=model_layer,
        n_images=EXP.sanity.n_images,
        seed=EXP.sanity.seed,
        checks=as_json(SANITY_CHECKS),
        statistics=STATISTICS,
        target=EXP.eval.target,
        batch_size=EXP.eval.batch_size,
        device=EXP.device,
    shell:
        "python -m cambench sanity-checks --model {input.model:q} --model-name {wildcards.model:q}"
        " --data {input.data:q} --method {wildcards.method:q} --params {params.method:q}"
        " --layer={params.layer:q} --n-images {params.n_images:q} --target {params.target:q}"
        " --batch-size {params.batch_size:q} --seed {params.seed:q} --checks {params.checks:q}"
        " --statistics {params.statistics:q} --device {params.device:q} --threads {threads:q}"
        " --out {output:q} > {log:q} 2>&1"


rule summarize:
    input:
        csv=per_pair(f"{RESULTS}/metrics/{{model}}/{{method}}/shard-{{shard}}.csv"),
        history=expand(f"{RESULTS}/models/{{model}}.json", model=MODELS),
        checkpoints=expand(f"{RESULTS}/models/{{model}}.pt", model=MODELS),
        randomization=RANDOMIZATION_CSVS,
        sanity_checks=SANITY_CHECK_CSVS,
        data_randomization=DATARAND_CSVS,
        roar=ROAR_SUMMARY,
    output:
        csv=report(
            f"{RESULTS}/summary.csv",
            caption="../workflow/report/summary_table.rst",
            category=REPORT_SECTIONS["Tables"],
            labels={"table": "summary"},
        ),
        md=f"{RESULTS}/summary.md",
        tex=f"{RESULTS}/summary.tex",
        comparison_csv=report(
            f"{RESULTS}/comparison.csv",
            caption="../workflow/report/comparison_table.rst",
            category=REPORT_SECTIONS["Tables"],
            labels={"table": "model comparison"},
        ),
        comparison_md=f"{RESULTS}/comparison.md",
        comparison_tex=f"{RESULTS}/comparison.tex",
        ranks=report(
            f"{RESULTS}/ranks.csv",
            caption="../workflow/report/rank_table.rst",
            category=REPORT_SECTIONS["Tables"],
            labels={"table": "ranks across metrics"},
        ),
    log:
        f"{LOGS}/summarize.log",
    benchmark:
        f"{BENCH}/summarize.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=stage_digest("summary"),
        experiment=EXP.name,
        pairs=COMPARISON_PAIRS,
        statistics=STATISTICS,
        expect=SUMMARY_EXPECT,
    shell:
        "python -m cambench summarize --csv {input.csv:q} --history {input.history:q} --experiment {params.experiment:q}"
        " --checkpoints {input.checkpoints:q} --expect {params.expect:q}"
        " --pairs {params.pairs:q} --statistics {params.statistics:q} --randomization {input.randomization:q}"
        + DATARAND_SUMMARY_ARG
        + SANITY_CHECKS_SUMMARY_ARG
        + ROAR_SUMMARY_ARG
        + " --out-csv {output.csv:q} --out-md {output.md:q} --out-tex {output.tex:q}"
        " --comparison-csv {output.comparison_csv:q} --comparison-md {output.comparison_md:q}"
        " --comparison-tex {output.comparison_tex:q} --ranks-csv {output.ranks:q} > {log:q} 2>&1"
