rule train:
    input:
        train=f"{RESULTS}/data/train.h5",
        test=f"{RESULTS}/data/test.h5",
        base=base_checkpoint,  # a castream model trains on its base's checkpoint
        weights=weights_input,
    output:
        model=f"{RESULTS}/models/{{model}}.pt",
        history=f"{RESULTS}/models/{{model}}.json",
    log:
        f"{LOGS}/train/{{model}}.log",
    benchmark:
        f"{BENCH}/train/{{model}}.tsv"
    conda:
        ENV
    threads: TRAIN_THREADS
    resources:
        mem_mb=lambda w: 8000 * train_processes(w),
        runtime=240,
        gpu=lambda w: GPU * train_processes(w),
    params:
        code=train_code,
        model=model_json,
        device=EXP.device,
        augment=AUGMENT_JSON,
        threads=TRAIN_THREADS,  # see rules/common.smk
    shell:
        "python -m cambench train --train {input.train:q} --test {input.test:q} --model {params.model:q} --name {wildcards.model:q}"
        " --base={input.base:q} --augment {params.augment:q} --out-model {output.model:q} --out-history {output.history:q}"
        " --device {params.device:q} --threads {threads:q} > {log:q} 2>&1"
