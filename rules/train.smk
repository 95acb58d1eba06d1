from cambench.data.augment import resolve_augment
from cambench.models import weights_file


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
        # a model initialized from a local state dict (weights: <path>) depends on it;
        # torchvision weights names are read from the torch hub cache at run time
        weights=lambda w: (
            [weights_file(config["models"][w.model])]
            if weights_file(config["models"][w.model])
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
        mem_mb=lambda w: 8000 * train_processes(w),
        runtime=240,
        gpu=lambda w: GPU * train_processes(w),
    params:
        code=stage_digest("train"),
        model=model_json,
        device=config["device"],
        # the dataset's augment mapping with its defaults (a training setting: changing
        # it retrains every model, without re-preparing the data)
        augment=as_json(resolve_augment(config["dataset"])),
    shell:
        "python -m cambench train --train {input.train:q} --test {input.test:q} --model {params.model:q} --name {wildcards.model}"
        " --base={input.base:q} --augment {params.augment:q} --out-model {output.model:q} --out-history {output.history:q}"
        " --device {params.device} --threads {threads} > {log:q} 2>&1"
