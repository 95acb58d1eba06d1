# Evaluation-only models (kind: pretrained): no training, their weights are converted
# into a cambench checkpoint and a history with the test accuracy.


rule convert:
    input:
        test=f"{RESULTS}/data/test.h5",
        weights=weights_input,
    output:
        model=f"{RESULTS}/models/{{model}}.pt",
        history=f"{RESULTS}/models/{{model}}.json",
    log:
        f"{LOGS}/convert/{{model}}.log",
    benchmark:
        f"{BENCH}/convert/{{model}}.tsv"
    wildcard_constraints:
        model=one_of(PRETRAINED),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=GPU,
    params:
        code=convert_code,
        model=model_json,
        batch_size=EXP.eval.batch_size,
        device=EXP.device,
    shell:
        "python -m cambench convert --test {input.test:q} --model {params.model:q} --name {wildcards.model:q}"
        " --batch-size {params.batch_size:q} --out-model {output.model:q} --out-history {output.history:q}"
        " --device {params.device:q} --threads {threads:q} > {log:q} 2>&1"


# a pretrained model matches both rules' outputs: it is converted, never trained
ruleorder: convert > train
