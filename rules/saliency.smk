# On a cluster (profiles/slurm) a shard's saliency job and its metrics job form one
# submitted job (group eval-<model>-<method>). Peak memory of a saliency or metrics job
# does not grow with the split (reads are batch by batch): 0.7 and 1.0 GB measured on
# CPU at 500 and 4000 images (benchmarks/results/memory-cpu.txt); a GPU job keeps room
# for the CUDA libraries.
EVAL_MEM_MB = 2000 if GPU == 0 else 4000
# Maps that need no model forward when the class explained is the label; under
# `device: auto` their saliency job asks for no GPU (it runs on the CPU, same maps).
NO_FORWARD_METHODS = ("fakecam", "random")


def saliency_gpus(wildcards):
    cheap = wildcards.method in NO_FORWARD_METHODS and EXP.eval.target == "label"
    return 0 if cheap and EXP.device == "auto" else GPU


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
        mem_mb=EVAL_MEM_MB,
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
        "python -m cambench saliency --model {input.model:q} --model-name {wildcards.model} --data {input.data:q}"
        " --method {wildcards.method} --params {params.method:q} --layer={params.layer:q} --n-images {params.n_images}"
        " --shards {params.shards} --shard {wildcards.shard} --batch-size {params.batch_size}"
        " --target {params.target} --device {params.device} --threads {threads}"
        " --out {output:q} > {log:q} 2>&1"
