# One shard of one model × method's maps (resources: rules/common.smk).


rule saliency:
    input:
        model=f"{RESULTS}/models/{{model}}.pt",
        data=f"{RESULTS}/data/test.h5",
    output:
        f"{RESULTS}/saliency/{{model}}/{{method}}/shard-{{shard}}.h5",
    log:
        f"{LOGS}/saliency/{{model}}/{{method}}/shard-{{shard}}.log",
    benchmark:
        f"{BENCH}/saliency/{{model}}/{{method}}/shard-{{shard}}.tsv"
    group:
        "eval-{model}-{method}"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=saliency_mem_mb,
        runtime=120,
        gpu=saliency_gpus,
    params:
        code=saliency_code,
        method=method_json,
        layer=model_layer,
        n_images=EXP.eval.n_images,
        shards=EXP.eval.shards,
        batch_size=EXP.eval.batch_size,
        target=EXP.eval.target,
        device=EXP.device,
    shell:
        "python -m cambench saliency --model {input.model:q} --model-name {wildcards.model:q} --data {input.data:q}"
        " --method {wildcards.method:q} --params {params.method:q} --layer={params.layer:q} --n-images {params.n_images:q}"
        " --shards {params.shards:q} --shard {wildcards.shard:q} --batch-size {params.batch_size:q}"
        " --target {params.target:q} --device {params.device:q} --threads {threads:q}"
        " --out {output:q} > {log:q} 2>&1"
