"""The cambench command line: every workflow step, runnable by hand.

Each Snakemake rule calls one subcommand, which parses its arguments and calls the
stage's job (cambench.jobs); structured parameters arrive as JSON, so that a rule's
``params:`` are exactly what the job sees. Defaults live in the config schema, not
here: the rules pass every value.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from cambench.allocator import tune_allocator
from cambench.atomic import DiskFullError
from cambench.openmp import prefer_passive_wait


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {text!r} ({err})") from err


def _count_or_all(text: str) -> int | None:
    """An image count, or ``all`` (``None``: the whole split)."""
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or 'all', got {text!r}") from None


def _add_runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", required=True, help="auto (CUDA when present), cpu or cuda[:N]")
    p.add_argument(
        "--threads", type=int, required=True, help="torch CPU threads (0 = torch's default)"
    )
    p.add_argument("--no-progress", action="store_true", help="disable progress bars")


def _runtime(args: argparse.Namespace):
    from cambench.runtime import pick_device, set_threads

    set_threads(args.threads)
    return pick_device(args.device)


def cmd_prepare_data(args: argparse.Namespace) -> None:
    from cambench.jobs import prepare

    prepare.run(args.dataset, args.out_train, args.out_test)


def cmd_train(args: argparse.Namespace) -> None:
    from cambench.jobs import train
    from cambench.specs import check_model_entry

    job = train.TrainJob(
        name=args.name,
        model_config=check_model_entry(args.name, args.model),
        train_path=args.train,
        test_path=args.test,
        out_model=args.out_model,
        out_history=args.out_history,
        base_path=args.base or None,
        augment=args.augment,
        resume=not args.no_resume,
        progress=not args.no_progress,
        permute_labels=args.permute_labels,
    )
    train.run(job, _runtime(args), args.threads, lambda threads: _train_argv(args, threads))


def _train_argv(args: argparse.Namespace, threads: int) -> list[str]:
    """The ``train`` command line of ``args`` with ``threads``: what each torchrun
    worker runs (keep in step with the train parser; tests/test_ddp.py checks)."""
    # a plug-in list given on the command line reaches the workers the same way
    # (CAMBENCH_PLUGINS, the rules' way, is inherited with the environment)
    argv = [f"--plugins={json.dumps(args.plugins)}"] if args.plugins is not None else []
    argv += [
        "train",
        f"--train={args.train}",
        f"--test={args.test}",
        f"--model={json.dumps(args.model)}",
        f"--name={args.name}",
        f"--out-model={args.out_model}",
        f"--out-history={args.out_history}",
        f"--base={args.base}",
        f"--device={args.device}",
        f"--threads={threads}",
    ]
    if args.augment is not None:
        argv.append(f"--augment={json.dumps(args.augment)}")
    if args.permute_labels is not None:
        argv.append(f"--permute-labels={args.permute_labels}")
    if args.no_resume:
        argv.append("--no-resume")
    if args.no_progress:
        argv.append("--no-progress")
    return argv


def cmd_convert(args: argparse.Namespace) -> None:
    from cambench.jobs import convert
    from cambench.specs import check_model_entry

    convert.run(
        args.name,
        check_model_entry(args.name, args.model),
        args.test,
        args.out_model,
        args.out_history,
        args.batch_size,
        _runtime(args),
    )


def cmd_saliency(args: argparse.Namespace) -> None:
    from cambench.jobs import saliency

    saliency.run(
        args.model,
        args.data,
        args.out,
        method=args.method,
        params=args.params,
        layer=args.layer or None,
        n_images=args.n_images,
        shards=args.shards,
        shard=args.shard,
        batch_size=args.batch_size,
        target=args.target,
        device=_runtime(args),
        model_name=args.model_name,
        progress=not args.no_progress,
    )


def cmd_metrics(args: argparse.Namespace) -> None:
    from cambench.jobs import metrics

    metrics.run(
        args.model,
        args.data,
        args.saliency,
        args.out_csv,
        args.out_curves,
        settings=args.metrics,
        batch_size=args.batch_size,
        device=_runtime(args),
        model_name=args.model_name,
        expected=args.expect,
        progress=not args.no_progress,
    )


def cmd_summarize(args: argparse.Namespace) -> None:
    from cambench.jobs import summarize

    summarize.run(
        args.csv,
        args.history,
        args.randomization,
        [tuple(p) for p in args.pairs],
        args.statistics,
        args.experiment,
        args.out_csv,
        args.out_md,
        args.out_tex,
        args.comparison_csv,
        args.comparison_md,
        args.comparison_tex,
        expected=args.expect,
        checkpoint_paths=args.checkpoints,
        ranks_csv=args.ranks_csv,
        data_randomization_paths=args.data_randomization,
        roar_paths=args.roar,
        sanity_check_paths=args.sanity_checks,
    )


def cmd_randomization(args: argparse.Namespace) -> None:
    from cambench.jobs import sanity

    sanity.run(
        args.model,
        args.data,
        args.out,
        method=args.method,
        params=args.params,
        layer=args.layer or None,
        n_images=args.n_images,
        target=args.target,
        batch_size=args.batch_size,
        device=_runtime(args),
        model_name=args.model_name,
        seed=args.seed,
        threshold=args.threshold,
        statistics=args.statistics,
    )


def cmd_sanity_checks(args: argparse.Namespace) -> None:
    from cambench.jobs import sanity

    sanity.run_checks(
        args.model,
        args.data,
        args.out,
        method=args.method,
        params=args.params,
        layer=args.layer or None,
        n_images=args.n_images,
        target=args.target,
        batch_size=args.batch_size,
        device=_runtime(args),
        model_name=args.model_name,
        seed=args.seed,
        checks=args.checks,
        statistics=args.statistics,
    )


def cmd_data_randomization(args: argparse.Namespace) -> None:
    from cambench.jobs import datarand

    datarand.run(
        args.model,
        args.randomized_model,
        args.randomized_history,
        args.data,
        args.out,
        args.out_examples,
        method=args.method,
        params=args.params,
        layer=args.layer or None,
        n_images=args.n_images,
        target=args.target,
        batch_size=args.batch_size,
        device=_runtime(args),
        model_name=args.model_name,
        seed=args.seed,
        threshold=args.threshold,
        statistics=args.statistics,
    )


def cmd_plot(args: argparse.Namespace) -> None:
    from cambench.jobs import plot

    plot.run(
        args.figure, args.inputs, args.out, args.title, args.data, args.n_images, args.threshold
    )


def cmd_roar_retrain(args: argparse.Namespace) -> None:
    from cambench.jobs import roar
    from cambench.specs import check_model_entry

    job = roar.RetrainJob(
        name=args.name,
        model_config=check_model_entry(args.name, args.model),
        train_path=args.train,
        test_path=args.test,
        model_path=args.checkpoint,
        train_maps=args.train_maps,
        test_maps=args.test_maps,
        method=args.method,
        mode=args.mode,
        fraction=args.fraction,
        seed=args.seed,
        imputation=args.imputation,
        noise=args.noise,
        augment=args.augment,
        out=args.out,
        resume=not args.no_resume,
        progress=not args.no_progress,
    )
    roar.retrain(job, _runtime(args))


def cmd_roar_aggregate(args: argparse.Namespace) -> None:
    from cambench.jobs import roar

    roar.aggregate(
        args.records, args.history, args.out_csv, args.out_areas, args.out_md, args.out_png
    )


def cmd_cache_inspect(args: argparse.Namespace) -> None:
    from cambench.cache import describe

    for path in args.files:
        print(describe(path))


def cmd_list(args: argparse.Namespace) -> None:
    from cambench.catalog import listing

    print(listing(args.kind))


def cmd_compare(args: argparse.Namespace) -> None:
    from cambench.summary.compare import compare_markdown

    print(compare_markdown(args.results, args.metrics), end="")


# One example per subcommand, shown at the end of its --help.
EXAMPLES = {
    "prepare-data": """cambench prepare-data --dataset '{"name": "shapes", "image_size": 32, "num_classes": 10, "train_size": 800, "test_size": 100, "seed": 0}' --out-train data/train.h5 --out-test data/test.h5""",
    "train": """cambench train --train data/train.h5 --test data/test.h5 --model '{"kind": "baseline", "arch": "resnet_small", "epochs": 2}' --name baseline --out-model baseline.pt --out-history baseline.json --device cpu --threads 2""",
    "convert": """cambench convert --test data/test.h5 --model '{"kind": "pretrained", "arch": "torchvision:resnet18", "weights": "resnet18.pth", "num_classes": 1000}' --name resnet18 --batch-size 64 --out-model resnet18.pt --out-history resnet18.json --device cpu --threads 2""",
    "saliency": """cambench saliency --model baseline.pt --model-name baseline --data data/test.h5 --method gradcam --params '{}' --n-images 64 --shards 1 --shard 0 --batch-size 32 --target label --out gradcam.h5 --device cpu --threads 1""",
    "metrics": """cambench metrics --model baseline.pt --model-name baseline --data data/test.h5 --saliency gradcam.h5 --metrics '{"protocol": "custom", "steps": 16, "insertion_substrate": "blur", "deletion_substrate": "black", "blur_sigma": 5.0, "blur_kernel": 11, "forward_batch_size": 512, "pointing_tolerance": 0}' --batch-size 64 --out-csv gradcam.csv --out-curves gradcam.npz --device cpu --threads 1""",
    "summarize": """cambench summarize --csv results/shapes/metrics/*/*/shard-*.csv --history results/shapes/models/*.json --experiment shapes --pairs '[]' --statistics '{"resamples": 1000, "confidence": 0.95, "seed": 0}' --out-csv summary.csv --out-md summary.md --out-tex summary.tex --comparison-csv comparison.csv --comparison-md comparison.md --comparison-tex comparison.tex --ranks-csv ranks.csv""",
    "randomization": """cambench randomization --model baseline.pt --model-name baseline --data data/test.h5 --method gradcam --params '{}' --n-images 32 --target label --batch-size 32 --seed 0 --statistics '{"resamples": 1000, "confidence": 0.95}' --threshold 0.99 --out gradcam.csv --device cpu --threads 1""",
    "sanity-checks": """cambench sanity-checks --model baseline.pt --model-name baseline --data data/test.h5 --method gradcam --params '{}' --n-images 32 --target label --batch-size 32 --seed 0 --checks '{"random_logit": {}, "smooth_mprt": {"n_samples": 10, "noise": 0.1}, "efficient_mprt": {"n_bins": 100}}' --statistics '{"resamples": 1000, "confidence": 0.95}' --out gradcam.checks.csv --device cpu --threads 1""",
    "data-randomization": """cambench data-randomization --model baseline.pt --randomized-model baseline-datarand.pt --randomized-history baseline-datarand.json --model-name baseline --data data/test.h5 --method gradcam --params '{}' --n-images 32 --target label --batch-size 32 --seed 0 --statistics '{"resamples": 1000, "confidence": 0.95, "seed": 0}' --threshold 0.99 --out gradcam.csv --out-examples gradcam.npz --device cpu --threads 1""",
    "roar-retrain": """cambench roar-retrain --train data/train.h5 --test data/test.h5 --checkpoint baseline.pt --model '{"kind": "baseline", "arch": "resnet_small", "epochs": 2}' --name baseline --train-maps train-gradcam.h5 --test-maps test-gradcam.h5 --method gradcam --mode roar --fraction 0.5 --seed 0 --imputation mean --noise 0.01 --out roar-gradcam-0.5-0.json --device cpu --threads 2""",
    "roar-aggregate": """cambench roar-aggregate --records results/roar/roar/*/*/*/*/seed-*.json --history results/roar/models/baseline.json --out-csv roar.csv --out-areas roar_auc.csv --out-md roar.md --out-png roar.png""",
    "plot": "cambench plot summary_heatmap results/shapes/summary.csv --out heatmap.png",
    "cache": "cambench cache inspect results/shapes/saliency/baseline/gradcam/shard-0.h5",
    "list": "cambench list methods",
    "compare": "cambench compare results/shapes results/shapes-224 --metrics AD insertion",
}


def _example(command: str) -> str:
    return f"example:\n  {EXAMPLES[command]}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cambench",
        description="cambench: every step of the saliency benchmark workflow, runnable by hand "
        "(`cambench <step> --help`).",
    )
    from cambench import __version__

    parser.add_argument("--version", action="version", version=f"cambench {__version__}")
    parser.add_argument(
        "--plugins",
        type=_json,
        default=None,
        help="plug-ins to import before the step runs, as a JSON list of Python files "
        "(relative to the working directory) or module names (default: the JSON list in "
        "$CAMBENCH_PLUGINS, which the workflow's rules set from the config's plugins:). "
        "Installed cambench.plugins entry points are always loaded",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "prepare-data", help="generate or import a dataset into data/{train,test}.h5"
    )
    p.add_argument(
        "--dataset", type=_json, required=True, help="the config's dataset mapping, as JSON"
    )
    p.add_argument("--out-train", required=True, help="train split (.h5)")
    p.add_argument("--out-test", required=True, help="test split (.h5)")
    p.set_defaults(func=cmd_prepare_data)

    p = sub.add_parser(
        "train",
        help="train one model; write its checkpoint and history",
        description="Train one model; write its checkpoint and history. With the model's "
        "gpus: N > 1 this command runs itself as N data-parallel processes through "
        "`python -m torch.distributed.run --standalone --nproc_per_node N` (one per GPU; "
        "gloo processes on the CPU) and --threads is shared among them.",
    )
    p.add_argument("--train", required=True, help="train split (.h5)")
    p.add_argument("--test", required=True, help="test split (.h5), for the per-epoch accuracy")
    p.add_argument("--model", type=_json, required=True, help="the model's config entry, as JSON")
    p.add_argument("--name", required=True)
    p.add_argument("--out-model", required=True)
    p.add_argument("--out-history", required=True)
    p.add_argument(
        "--base",
        default="",
        help="castream only: the trained base model's checkpoint (.pt); its backbone and "
        "classifier are frozen",
    )
    p.add_argument(
        "--augment",
        type=_json,
        default=None,
        help="training augmentation, as JSON: the dataset's augment mapping with its defaults "
        '(e.g. {"hflip": true, "crop_padding": 4}); default: horizontal flips only. '
        "A model's own hflip key overrides hflip",
    )
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="neither read nor write <out-model>.resume.pt (by default training state is "
        "saved there after every epoch, an interrupted run continues from it, and it is "
        "deleted when the outputs are written)",
    )
    p.add_argument(
        "--permute-labels",
        type=int,
        default=None,
        metavar="SEED",
        help="train on the train split's labels permuted with this seed (the data "
        "randomization sanity check); the history records the seed and the accuracy on "
        "the permuted training labels (train_acc)",
    )
    _add_runtime(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "convert",
        help="an evaluation-only (kind: pretrained) model into a cambench checkpoint and a "
        "history with its test accuracy",
    )
    p.add_argument("--test", required=True, help="test split (.h5), for the accuracy")
    p.add_argument("--model", type=_json, required=True, help="the model's config entry, as JSON")
    p.add_argument("--name", required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--out-model", required=True)
    p.add_argument("--out-history", required=True)
    _add_runtime(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("saliency", help="compute one shard of saliency maps into HDF5")
    p.add_argument("--model", required=True, help="checkpoint (.pt)")
    p.add_argument("--model-name", required=True, help="the model's name in the config")
    p.add_argument("--data", required=True, help="test split (.h5)")
    p.add_argument(
        "--method",
        required=True,
        help="a registered saliency method (cambench list methods: gradcam, opticam, …, or "
        "one a plug-in registers), captum:<Class> or pytorch_grad_cam:<Class>; or the "
        "label of a methods: entry whose --params name the method it runs under 'method'",
    )
    p.add_argument(
        "--params",
        type=_json,
        required=True,
        help="method parameters, as JSON; a variant's also 'method' (the file's method "
        "attribute is then --method, the label, and registered_method the method)",
    )
    p.add_argument("--layer", default="", help="dotted target layer path (default: the model's)")
    p.add_argument(
        "--n-images",
        type=_count_or_all,
        required=True,
        help="explain the first N images of the split (all: every image)",
    )
    p.add_argument("--shards", type=int, required=True, help="split them into this many shards")
    p.add_argument("--shard", type=int, required=True, help="this job's shard (0-based)")
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument(
        "--target", choices=["label", "predicted"], required=True, help="class explained"
    )
    p.add_argument("--out", required=True)
    _add_runtime(p)
    p.set_defaults(func=cmd_saliency)

    p = sub.add_parser("metrics", help="score one saliency shard; write per-image CSV and curves")
    p.add_argument("--model", required=True, help="checkpoint (.pt)")
    p.add_argument("--model-name", required=True, help="the model's name in the config")
    p.add_argument("--data", required=True, help="test split (.h5)")
    p.add_argument("--saliency", required=True, help="the saliency shard (.h5)")
    p.add_argument(
        "--metrics",
        type=_json,
        required=True,
        help="the protocol keys, forward_batch_size and pointing_tolerance, as JSON",
    )
    p.add_argument(
        "--expect",
        type=_json,
        default={},
        help="what the saliency file must be, as JSON: model, method, params, shard, shards, "
        "n_images (checked against its attributes and its images)",
    )
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-curves", required=True)
    _add_runtime(p)
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser(
        "summarize",
        help="aggregate per-image CSVs into the summary and model-comparison tables",
    )
    p.add_argument("--csv", nargs="+", required=True, help="per-image metric CSVs")
    p.add_argument("--history", nargs="*", default=[], help="training histories (.json)")
    p.add_argument(
        "--checkpoints",
        nargs="*",
        default=[],
        help="the models' checkpoints (<model>.pt): each per-image file must be made from "
        "its model's current checkpoint",
    )
    p.add_argument(
        "--expect",
        type=_json,
        default=None,
        help='the configuration every input must record, as JSON: {"models": {name: '
        'config}, "methods": {name: params}, "metrics": settings} (a restored copy of old '
        "results is an error naming the file and the key)",
    )
    p.add_argument("--experiment", required=True)
    p.add_argument(
        "--pairs",
        type=_json,
        required=True,
        help='the model comparisons, as JSON: [["castream", "baseline", "castream vs its base"], ...]',
    )
    p.add_argument("--randomization", nargs="*", default=[], help="randomization sanity-check CSVs")
    p.add_argument(
        "--roar", nargs="*", default=[], help="the ROAR/KAR section (roar.md of roar-aggregate)"
    )
    p.add_argument(
        "--data-randomization",
        nargs="*",
        default=[],
        help="data randomization sanity-check CSVs (cambench data-randomization)",
    )
    p.add_argument(
        "--sanity-checks",
        nargs="*",
        default=[],
        help="random-logit and MPRT check CSVs (cambench sanity-checks)",
    )
    p.add_argument(
        "--statistics",
        type=_json,
        required=True,
        help='bootstrap settings as JSON: {"resamples": 1000, "confidence": 0.95, "seed": 0}',
    )
    for option in (
        "out-csv",
        "out-md",
        "out-tex",
        "comparison-csv",
        "comparison-md",
        "comparison-tex",
    ):
        p.add_argument(f"--{option}", required=True)
    p.add_argument(
        "--ranks-csv",
        help="also write the rank table across metrics (a section of --out-md) as CSV",
    )
    p.set_defaults(func=cmd_summarize)

    p = sub.add_parser(
        "randomization",
        help="model parameter randomization sanity check of one method on one model",
    )
    p.add_argument("--model", required=True, help="checkpoint (.pt)")
    p.add_argument("--model-name", required=True, help="the model's name in the config")
    p.add_argument("--data", required=True, help="test split (.h5): its first --n-images images")
    p.add_argument(
        "--method",
        required=True,
        help="a registered saliency method, captum:<Class> or pytorch_grad_cam:<Class>; or "
        "a methods: entry's label (the CSV's method) whose --params carry 'method'",
    )
    p.add_argument("--params", type=_json, required=True, help="method parameters, as JSON")
    p.add_argument("--layer", default="", help="dotted target layer path (default: the model's)")
    p.add_argument("--n-images", type=int, required=True)
    p.add_argument("--target", choices=["label", "predicted"], required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--seed", type=int, required=True, help="seed of the re-initializations")
    p.add_argument(
        "--statistics",
        type=_json,
        required=True,
        help='bootstrap settings of the correlation intervals, as JSON: {"resamples": 1000, "confidence": 0.95}',
    )
    p.add_argument(
        "--threshold",
        type=float,
        required=True,
        help="flag the method as model-independent when its mean Spearman correlation "
        "stays at or above this through the cascade",
    )
    p.add_argument("--out", required=True, help="CSV, one row per cascade step")
    _add_runtime(p)
    p.set_defaults(func=cmd_randomization)

    p = sub.add_parser(
        "sanity-checks",
        help="the random-logit test, smooth MPRT and efficient MPRT of one method on one model",
    )
    p.add_argument("--model", required=True, help="checkpoint (.pt)")
    p.add_argument("--model-name", required=True, help="the model's name in the config")
    p.add_argument("--data", required=True, help="test split (.h5): its first --n-images images")
    p.add_argument(
        "--method", required=True, help="as cambench randomization's --method (a label or a method)"
    )
    p.add_argument("--params", type=_json, required=True, help="method parameters, as JSON")
    p.add_argument("--layer", default="", help="dotted target layer path (default: the model's)")
    p.add_argument("--n-images", type=int, required=True)
    p.add_argument("--target", choices=["label", "predicted"], required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--seed", type=int, required=True, help="seed of re-initializations and draws")
    p.add_argument(
        "--checks",
        type=_json,
        required=True,
        help="the checks and their settings, as JSON: keys random_logit, smooth_mprt "
        "(n_samples, noise), efficient_mprt (n_bins)",
    )
    p.add_argument("--statistics", type=_json, required=True, help="bootstrap settings, as JSON")
    p.add_argument("--out", required=True, help="CSV, one row per check and cascade step")
    _add_runtime(p)
    p.set_defaults(func=cmd_sanity_checks)

    p = sub.add_parser(
        "data-randomization",
        help="data randomization sanity check of one method: its maps on a model and on "
        "the same architecture trained on permuted labels",
    )
    p.add_argument("--model", required=True, help="the trained checkpoint (.pt)")
    p.add_argument(
        "--randomized-model", required=True, help="its permuted-label twin (train --permute-labels)"
    )
    p.add_argument(
        "--randomized-history", required=True, help="the twin's history (.json): accuracies, seed"
    )
    p.add_argument("--model-name", required=True, help="the model's name in the config")
    p.add_argument("--data", required=True, help="test split (.h5): its first --n-images images")
    p.add_argument("--method", required=True, help="a registered saliency method")
    p.add_argument("--params", type=_json, required=True, help="method parameters, as JSON")
    p.add_argument("--layer", default="", help="dotted target layer path (default: the model's)")
    p.add_argument("--n-images", type=int, required=True)
    p.add_argument("--target", choices=["label", "predicted"], required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--seed", type=int, required=True, help="the label permutation's seed")
    p.add_argument(
        "--statistics",
        type=_json,
        required=True,
        help='bootstrap settings, as JSON: {"resamples": 1000, "confidence": 0.95, "seed": 0}',
    )
    p.add_argument(
        "--threshold",
        type=float,
        required=True,
        help="flag the method as data-independent when its mean Spearman correlation is "
        "at or above this",
    )
    p.add_argument("--out", required=True, help="CSV, one row")
    p.add_argument("--out-examples", required=True, help=".npz of example maps for the figure")
    _add_runtime(p)
    p.set_defaults(func=cmd_data_randomization)

    p = sub.add_parser(
        "roar-retrain",
        help="ROAR/KAR: retrain a model's recipe from scratch on images degraded by a "
        "method's maps at one fraction, and record its accuracy on the degraded test split",
    )
    p.add_argument("--train", required=True, help="train split (.h5)")
    p.add_argument("--test", required=True, help="test split (.h5)")
    p.add_argument("--checkpoint", required=True, help="the model whose maps degrade the data")
    p.add_argument("--model", type=_json, required=True, help="the model's config entry, as JSON")
    p.add_argument("--name", required=True, help="the model's name in the config")
    p.add_argument(
        "--train-maps", nargs="+", required=True, help="maps of the train split, shards in order"
    )
    p.add_argument(
        "--test-maps", nargs="+", required=True, help="maps of the test split, shards in order"
    )
    p.add_argument("--method", required=True, help="the method that made the maps")
    p.add_argument("--mode", choices=["roar", "kar"], required=True)
    p.add_argument("--fraction", type=float, required=True, help="in (0, 1)")
    p.add_argument("--seed", type=int, required=True, help="retrain k (seed: the model's + 1 + k)")
    p.add_argument("--imputation", choices=["mean", "noisy_linear"], required=True)
    p.add_argument("--noise", type=float, required=True, help="noisy_linear: noise std")
    p.add_argument(
        "--augment", type=_json, default=None, help="the dataset's augment mapping, as JSON"
    )
    p.add_argument("--out", required=True, help="the record (.json)")
    p.add_argument("--no-resume", action="store_true", help="ignore a per-epoch resume file")
    _add_runtime(p)
    p.set_defaults(func=cmd_roar_retrain)

    p = sub.add_parser(
        "roar-aggregate",
        help="ROAR/KAR: roar.csv, the areas under the curves with the paired comparison "
        "with random, their Markdown section and the figure",
    )
    p.add_argument("--records", nargs="+", required=True, help="roar-retrain records (.json)")
    p.add_argument("--history", nargs="+", required=True, help="the models' training histories")
    for option in ("out-csv", "out-areas", "out-md", "out-png"):
        p.add_argument(f"--{option}", required=True)
    p.set_defaults(func=cmd_roar_aggregate)

    p = sub.add_parser("plot", help="draw one figure (PNG, and a PDF beside it)")
    p.add_argument(
        "figure",
        help="summary_heatmap, metric_bars (summary.csv) | rank_heatmap (ranks.csv) | training "
        "(histories) | randomization "
        "(randomization CSVs) | curves (curve .npz files) | distributions (per-image CSVs) | "
        "saliency_grid (saliency .h5 files and --data)",
    )
    p.add_argument("inputs", nargs="+", help="the files the figure is drawn from")
    p.add_argument("--data", help="saliency_grid: the test split")
    p.add_argument("--n-images", type=int, help="saliency_grid: images shown")
    p.add_argument("--title", default="")
    p.add_argument("--threshold", type=float, help="randomization: the flag threshold")
    p.add_argument("--out", required=True, help="the PNG; the PDF gets the same name")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("cache", help="saliency cache tools")
    cache_sub = p.add_subparsers(dest="cache_command", required=True)
    q = cache_sub.add_parser("inspect", help="print a saliency file's provenance and shape")
    q.add_argument("files", nargs="+")
    q.set_defaults(func=cmd_cache_inspect)

    p = sub.add_parser(
        "list",
        help="list the registered methods (with parameters and defaults), architectures, "
        "metrics or config keys",
    )
    p.add_argument("kind", choices=["methods", "archs", "metrics", "keys"])
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "compare",
        help="one table of several experiments' summaries: the same model × method rows "
        "side by side, each value with its interval",
    )
    p.add_argument(
        "results", nargs="+", help="results/<experiment> folders (or their summary.csv files)"
    )
    p.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        help="metric columns to show (default: every metric the summaries have)",
    )
    p.set_defaults(func=cmd_compare)

    for name, subparser in sub.choices.items():
        subparser.epilog = _example(name)
        subparser.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    from cambench.plugins import load_plugins, plugins_from_env

    args = build_parser().parse_args(argv)
    tune_allocator()
    prefer_passive_wait()
    try:
        load_plugins(plugins_from_env() if args.plugins is None else args.plugins)
        args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"cambench {args.command}: error: {err}", file=sys.stderr)
        if isinstance(err, DiskFullError):
            # HDF5's exit handlers would close the files the full disk broke, and can
            # crash doing so: the message is out, the partial output removed; leave now
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
