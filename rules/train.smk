rule train:
    input:
        train=f"{RESULTS}/data/train.h5",
        test=f"{RESULTS}/data/test.h5",
        # a castream model trains on top of its base model's checkpoint
        base=lambda w: (
            [f"{RESULTS}/models/{config['models'][w.model]['base']}.pt"]
            if config["models"][w.model].get("kind") == "castream"
            else []
        ),
    output:
        model=f"{RESULTS}/models/{{model}}.pt",
        history=f"{RESULTS}/models/{{model}}.json",
    log:
        f"{LOGS}/train/{{model}}.log",
    benchmark:
        f"{BENCH}/train/{{model}}.tsv"
    conda:
        ENV
    threads: 4
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=GPU,
    params:
        code=stage_digest("train"),
        model=model_json,
        device=config["device"],
    shell:
        "python -m cambench train --train {input.train:q} --test {input.test:q} --model {params.model:q} --name {wildcards.model}"
        " --base={input.base:q} --out-model {output.model:q} --out-history {output.history:q}"
        " --device {params.device} --threads {threads} > {log:q} 2>&1"
