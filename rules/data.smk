rule prepare_data:
    output:
        train=f"{RESULTS}/data/train.h5",
        test=f"{RESULTS}/data/test.h5",
    params:
        dataset=as_json(config["dataset"]),
        out_dir=f"{RESULTS}/data",
    log:
        f"{LOGS}/prepare_data.log",
    benchmark:
        f"{BENCH}/prepare_data.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        ENV
    shell:
        "{CAMBENCH} prepare-data --dataset {params.dataset:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"
