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
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=GPU,
    params:
        code=stage_digest("metrics"),
        metrics=as_json(config["metrics"]),
        batch_size=config["eval"]["batch_size"],
        device=config["device"],
    shell:
        "python -m cambench metrics --model {input.model:q} --model-name {wildcards.model} --data {input.data:q}"
        " --saliency {input.saliency:q} --metrics {params.metrics:q} --batch-size {params.batch_size}"
        " --device {params.device} --threads {threads}"
        " --out-csv {output.csv:q} --out-curves {output.curves:q} > {log:q} 2>&1"


rule summarize:
    input:
        csv=expand(
            f"{RESULTS}/metrics/{{model}}/{{method}}/shard-{{shard}}.csv",
            model=MODELS,
            method=METHODS,
            shard=SHARDS,
        ),
        history=expand(f"{RESULTS}/models/{{model}}.json", model=MODELS),
    output:
        csv=report(
            f"{RESULTS}/summary.csv",
            caption="../workflow/report/summary_table.rst",
            category="Summary",
        ),
        md=f"{RESULTS}/summary.md",
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
        experiment=EXPERIMENT,
    shell:
        "python -m cambench summarize --csv {input.csv:q} --history {input.history:q} --experiment {params.experiment}"
        " --out-csv {output.csv:q} --out-md {output.md:q} > {log:q} 2>&1"
