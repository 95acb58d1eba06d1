# The data randomization sanity check (sanity.data_randomization; no job when absent):
# the model's recipe retrained on permuted labels, then each method's maps on both.


rule train_datarand:
    input:
        train=f"{RESULTS}/data/train.h5",
        test=f"{RESULTS}/data/test.h5",
        weights=weights_input,
    output:
        model=f"{RESULTS}/models/{{model}}-datarand.pt",
        history=f"{RESULTS}/models/{{model}}-datarand.json",
    log:
        f"{LOGS}/train/{{model}}-datarand.log",
    benchmark:
        f"{BENCH}/train/{{model}}-datarand.tsv"
    wildcard_constraints:
        model=one_of([DATARAND.model] if DATARAND else []),
    conda:
        ENV
    threads: TRAIN_THREADS
    resources:
        mem_mb=lambda w: 8000 * train_processes(w),
        runtime=240,
        gpu=lambda w: GPU * train_processes(w),
    params:
        code=train_code,
        model=datarand_model_json,
        seed=DATARAND.seed if DATARAND else 0,
        device=EXP.device,
        augment=AUGMENT_JSON,
        threads=TRAIN_THREADS,
    shell:
        "python -m cambench train --train {input.train:q} --test {input.test:q} --model {params.model:q}"
        " --name {wildcards.model:q}-datarand --permute-labels {params.seed:q} --augment {params.augment:q}"
        " --out-model {output.model:q} --out-history {output.history:q}"
        " --device {params.device:q} --threads {threads:q} > {log:q} 2>&1"


rule data_randomization:
    input:
        model=f"{RESULTS}/models/{{model}}.pt",
        randomized=f"{RESULTS}/models/{{model}}-datarand.pt",
        history=f"{RESULTS}/models/{{model}}-datarand.json",
        data=f"{RESULTS}/data/test.h5",
    output:
        csv=f"{RESULTS}/sanity/data-randomization/{{model}}/{{method}}.csv",
        examples=f"{RESULTS}/sanity/data-randomization/{{model}}/{{method}}.npz",
    log:
        f"{LOGS}/sanity/data-randomization/{{model}}/{{method}}.log",
    benchmark:
        f"{BENCH}/sanity/data-randomization/{{model}}/{{method}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=GPU,
    params:
        code=lambda w: stage_digest("datarand", registered_method(w)),
        method=method_json,
        layer=model_layer,
        n_images=DATARAND.n_images if DATARAND else 0,
        seed=DATARAND.seed if DATARAND else 0,
        threshold=EXP.sanity.threshold,
        statistics=STATISTICS,
        target=EXP.eval.target,
        batch_size=EXP.eval.batch_size,
        device=EXP.device,
    shell:
        "python -m cambench data-randomization --model {input.model:q} --model-name {wildcards.model:q}"
        " --randomized-model {input.randomized:q} --randomized-history {input.history:q}"
        " --data {input.data:q} --method {wildcards.method:q} --params {params.method:q}"
        " --layer={params.layer:q} --n-images {params.n_images:q} --target {params.target:q}"
        " --batch-size {params.batch_size:q} --seed {params.seed:q} --threshold {params.threshold:q}"
        " --statistics {params.statistics:q} --device {params.device:q} --threads {threads:q}"
        " --out {output.csv:q} --out-examples {output.examples:q} > {log:q} 2>&1"
