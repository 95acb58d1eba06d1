rule prepare_data:
    output:
        train=f"{RESULTS}/data/train.h5",
        test=f"{RESULTS}/data/test.h5",
    log:
        f"{LOGS}/prepare_data.log",
    benchmark:
        f"{BENCH}/prepare_data.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        code=stage_digest("data"),
        dataset=DATASET_JSON,
    shell:
        "python -m cambench prepare-data --dataset {params.dataset:q} --out-train {output.train:q} --out-test {output.test:q} > {log:q} 2>&1"
