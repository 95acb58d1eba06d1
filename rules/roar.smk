# ROAR and KAR (config `protocols.roar`, docs/roar.md): the maps of every train and test
# image (the saliency job on the whole split), one retrain job per model × mode × method
# × fraction × seed on images degraded on the fly from those maps, and the aggregate
# (roar.csv, the areas under the curves, the summary section, the figure).
# Nothing here runs when the block is absent.
from cambench.jobs import roar as roar_job
from cambench.provenance import code_digest

ROAR = EXP.roar
ROAR_FRACTIONS = {str(f): f for f in (ROAR.fractions if ROAR else ())}
ROAR_SHARDS = list(range(ROAR.shards)) if ROAR else []
ROAR_MAPS = f"{RESULTS}/roar/maps/{{split}}/{{model}}/{{method}}/shard-{{shard}}.h5"
ROAR_RECORD = (
    f"{RESULTS}/roar/{{model}}/{{mode}}/{{method}}/f{{fraction}}/seed-{{seed}}.json"
)
ROAR_RECORDS = [
    ROAR_RECORD.format(
        model=model, mode=mode, method=method, fraction=str(f), seed=seed
    )
    for model, mode, method, f, seed in (ROAR.retrains() if ROAR else [])
]
ROAR_TARGETS = (
    [
        f"{RESULTS}/roar.csv",
        f"{RESULTS}/roar_auc.csv",
        f"{RESULTS}/roar.md",
        f"{RESULTS}/plots/roar.png",
    ]
    if ROAR
    else []
)


if ROAR:

    localrules:
        roar_aggregate,

    rule roar_saliency:
        input:
            model=f"{RESULTS}/models/{{model}}.pt",
            data=f"{RESULTS}/data/{{split}}.h5",
        output:
            ROAR_MAPS,
        log:
            f"{LOGS}/roar/maps/{{split}}/{{model}}/{{method}}/shard-{{shard}}.log",
        benchmark:
            f"{BENCH}/roar/maps/{{split}}/{{model}}/{{method}}/shard-{{shard}}.tsv"
        wildcard_constraints:
            split="train|test",
            model=one_of(ROAR.models),
            method=one_of(ROAR.methods),
        group:
            "roar-maps-{model}-{method}"
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
            shards=ROAR.shards,
            batch_size=EXP.eval.batch_size,
            target=EXP.eval.target,
            device=EXP.device,
        shell:
            "python -m cambench saliency --model {input.model:q} --model-name {wildcards.model:q} --data {input.data:q}"
            " --method {wildcards.method:q} --params {params.method:q} --layer={params.layer:q} --n-images all"
            " --shards {params.shards:q} --shard {wildcards.shard:q} --batch-size {params.batch_size:q}"
            " --target {params.target:q} --device {params.device:q} --threads {threads:q}"
            " --out {output:q} > {log:q} 2>&1"

    rule roar_retrain:
        input:
            train=f"{RESULTS}/data/train.h5",
            test=f"{RESULTS}/data/test.h5",
            checkpoint=f"{RESULTS}/models/{{model}}.pt",
            # the maps of each split of the retrain's model and method, shards in order
            train_maps=lambda w: expand(
                ROAR_MAPS,
                split="train",
                model=w.model,
                method=w.method,
                shard=ROAR_SHARDS,
            ),
            test_maps=lambda w: expand(
                ROAR_MAPS,
                split="test",
                model=w.model,
                method=w.method,
                shard=ROAR_SHARDS,
            ),
        output:
            ROAR_RECORD,
        log:
            f"{LOGS}/roar/{{model}}/{{mode}}/{{method}}/f{{fraction}}/seed-{{seed}}.log",
        benchmark:
            f"{BENCH}/roar/{{model}}/{{mode}}/{{method}}/f{{fraction}}/seed-{{seed}}.tsv"
        wildcard_constraints:
            model=one_of(ROAR.models),
            mode=one_of(ROAR.modes),
            method=one_of(ROAR.methods),
            fraction=one_of(ROAR_FRACTIONS),
            seed=r"\d+",
        conda:
            ENV
        threads: TRAIN_THREADS
        resources:
            mem_mb=8000,
            runtime=240,
            gpu=GPU,
        params:
            code=code_digest(roar_job.retrain),
            train_code=train_code,
            model=model_json,
            fraction=lambda w: ROAR_FRACTIONS[w.fraction],
            imputation=ROAR.imputation,
            noise=ROAR.noise,
            augment=AUGMENT_JSON,
            device=EXP.device,
            threads=TRAIN_THREADS,  # CPU training is bit-reproducible per thread count
        shell:
            "python -m cambench roar-retrain --train {input.train:q} --test {input.test:q}"
            " --checkpoint {input.checkpoint:q} --model {params.model:q} --name {wildcards.model:q}"
            " --train-maps {input.train_maps:q} --test-maps {input.test_maps:q}"
            " --method {wildcards.method:q} --mode {wildcards.mode:q} --fraction {params.fraction:q}"
            " --seed {wildcards.seed:q} --imputation {params.imputation:q} --noise {params.noise:q}"
            " --augment {params.augment:q} --out {output:q}"
            " --device {params.device:q} --threads {threads:q} > {log:q} 2>&1"

    rule roar_aggregate:
        input:
            records=ROAR_RECORDS,
            history=expand(f"{RESULTS}/models/{{model}}.json", model=ROAR.models),
        output:
            csv=f"{RESULTS}/roar.csv",
            areas=report(
                f"{RESULTS}/roar_auc.csv",
                caption="../workflow/report/roar_table.rst",
                category=REPORT_SECTIONS["ROAR and KAR"],
                subcategory="all models",
                labels={"table": "ROAR and KAR areas"},
            ),
            md=f"{RESULTS}/roar.md",
            png=report(
                f"{RESULTS}/plots/roar.png",
                caption="../workflow/report/roar.rst",
                category=REPORT_SECTIONS["ROAR and KAR"],
                subcategory="all models",
                labels={"figure": "roar"},
            ),
            pdf=f"{RESULTS}/plots/roar.pdf",
        log:
            f"{LOGS}/roar/aggregate.log",
        benchmark:
            f"{BENCH}/roar/aggregate.tsv"
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            code=code_digest(roar_job.aggregate),
            settings=as_json(
                {
                    "models": ROAR.models,
                    "modes": ROAR.modes,
                    "methods": ROAR.methods,
                    "fractions": ROAR.fractions,
                    "seeds": ROAR.seeds,
                }
            ),
        shell:
            "python -m cambench roar-aggregate --records {input.records:q} --history {input.history:q}"
            " --out-csv {output.csv:q} --out-areas {output.areas:q} --out-md {output.md:q}"
            " --out-png {output.png:q} > {log:q} 2>&1"
