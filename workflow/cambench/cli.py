"""The ``cambench`` command line: every workflow step, runnable by hand.

Each Snakemake rule calls one subcommand; structured parameters arrive as JSON so
that a rule's ``params:`` are exactly what the step sees.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {text!r} ({err})") from err


def _add_runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--no-progress", action="store_true", help="disable progress bars")


def _runtime(args: argparse.Namespace):
    from cambench.runtime import pick_device, set_threads

    set_threads(args.threads)
    return pick_device(args.device)


def cmd_prepare_data(args: argparse.Namespace) -> None:
    from cambench.data import prepare_dataset

    paths = prepare_dataset(args.dataset, {"train": args.out_train, "test": args.out_test})
    for split, path in paths.items():
        print(f"{split}: {path}")


def cmd_train(args: argparse.Namespace) -> None:
    from cambench.models import check_model_config
    from cambench.training import TrainConfig, distributed

    device = _runtime(args)
    config = dict(args.model)
    kind = config.get("kind", "baseline")
    check_model_config(args.name, config)
    if kind == "castream" and not args.base:
        raise ValueError("a castream model needs --base, the base model's checkpoint")
    if kind != "castream" and args.base:
        raise ValueError(f"--base is only for castream models, not kind {kind!r}")
    gpus = TrainConfig.from_model_config(config).gpus
    if distributed.launched_by_torchrun():
        with distributed.process_group(device) as rank_device:
            _train(args, rank_device)
    elif gpus > 1:
        _launch_train(args, device, gpus)
    else:
        _train(args, device)


def _launch_train(args: argparse.Namespace, device, gpus: int) -> None:
    """Run this training as ``gpus`` torchrun workers (see cambench.training.distributed)."""
    import shlex

    import torch

    from cambench.training import distributed

    try:
        distributed.check_devices(device, gpus)
    except ValueError as err:
        raise ValueError(f"config key 'models.{args.name}.gpus' is {gpus}: {err}") from None
    threads = max(1, (args.threads or torch.get_num_threads()) // gpus)
    argv = _train_argv(args, threads)
    print(f"{args.name}: {gpus} training processes on {device.type}, {threads} thread(s) each")
    print(shlex.join(distributed.torchrun_command(gpus, argv)), flush=True)
    status = distributed.run_torchrun(gpus, argv, threads)
    if status != 0:
        print(
            f"cambench train: error: the {gpus} training processes failed (torchrun exit "
            f"status {status}; their errors are above)",
            file=sys.stderr,
        )
        raise SystemExit(1)


def _train_argv(args: argparse.Namespace, threads: int) -> list[str]:
    """The ``train`` command line of ``args`` with ``threads``: what each torchrun
    worker runs (keep in step with the train parser; tests/test_ddp.py checks)."""
    argv = [
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
    if args.no_resume:
        argv.append("--no-resume")
    if args.no_progress:
        argv.append("--no-progress")
    return argv


def _train(args: argparse.Namespace, device) -> None:
    """Train and save one model; on several processes each calls this, rank 0 writes."""
    from pathlib import Path

    from cambench.data import read_split
    from cambench.evaluation import write_json
    from cambench.models import build_model, load_checkpoint, save_checkpoint
    from cambench.models.castream import POSITIONS, CAStream
    from cambench.runtime import seed_everything
    from cambench.training import (
        CrossEntropyObjective,
        GradAlignObjective,
        TrainConfig,
        distributed,
        train_model,
    )

    config = dict(args.model)
    kind = config.get("kind", "baseline")
    train_config = TrainConfig.from_model_config(config)
    seed_everything(train_config.seed)
    train = read_split(args.train)
    test = read_split(args.test)
    num_classes = len(train.class_names)
    objective = CrossEntropyObjective(label_smoothing=train_config.label_smoothing)
    if kind == "castream":
        base = load_checkpoint(args.base)
        if base.model_config.get("kind", "baseline") == "castream":
            raise ValueError(f"{args.base}: the base of a castream model cannot be castream")
        config["base_config"] = base.model_config
        model = CAStream(base, config.get("blocks_at", POSITIONS))
        if model.num_classes != num_classes:
            raise ValueError(
                f"{args.base}: the base model has {model.num_classes} classes, "
                f"the data {num_classes}"
            )
    else:
        model = build_model(config, num_classes)
        if kind == "gradalign":
            objective = GradAlignObjective(
                lam=float(config.get("lambda", 7.5e-3)),
                distance=config.get("distance", "cosine"),
                label_smoothing=train_config.label_smoothing,
            )
    resume = None if args.no_resume else Path(f"{args.out_model}.resume.pt")
    start = time.perf_counter()
    history = train_model(
        model,
        train,
        test,
        train_config,
        device,
        progress=not args.no_progress,
        objective=objective,
        augment=args.augment,
        resume_path=resume,
    )
    seconds = time.perf_counter() - start
    world = distributed.current_world()
    if not world.is_main:
        return
    save_checkpoint(args.out_model, model, config, num_classes, train.class_names)
    write_json(
        args.out_history,
        {
            "model": args.name,
            "kind": kind,
            "config": config,
            "augment": args.augment,
            "epochs": history,
            "test_acc": history[-1]["test_acc"] if history else float("nan"),
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "seconds": seconds,
            "device": str(device),
            "processes": world.size,
        },
    )
    if resume is not None:
        resume.unlink(missing_ok=True)  # the outputs are complete
    print(f"{args.name}: test accuracy {100 * history[-1]['test_acc']:.2f} % in {seconds:.0f} s")


def cmd_saliency(args: argparse.Namespace) -> None:
    from cambench.evaluation import run_saliency

    device = _runtime(args)
    run_saliency(
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
        device=device,
        progress=not args.no_progress,
    )


def cmd_metrics(args: argparse.Namespace) -> None:
    from cambench.evaluation import run_metrics

    device = _runtime(args)
    labels = {"model": args.model_name} if args.model_name else {}
    run_metrics(
        args.model,
        args.data,
        args.saliency,
        args.out_csv,
        args.out_curves,
        metrics_config=args.metrics,
        batch_size=args.batch_size,
        device=device,
        labels=labels,
        progress=not args.no_progress,
    )


def cmd_summarize(args: argparse.Namespace) -> None:
    from cambench.summary import write_summary

    comparison = {
        key: path
        for key, path in (
            ("csv", args.comparison_csv),
            ("md", args.comparison_md),
            ("tex", args.comparison_tex),
        )
        if path
    }
    summary = write_summary(
        args.csv,
        args.history,
        args.out_csv,
        args.out_md,
        experiment=args.experiment,
        out_tex=args.out_tex or None,
        models=args.models,
        comparison_out=comparison,
        randomization_paths=args.randomization,
        statistics=args.statistics,
    )
    shown = [c for c in summary.columns if not c.endswith(("_ci_low", "_ci_high"))]
    print(summary[shown].to_string(index=False, float_format=lambda v: f"{v:.1f}"))


def cmd_randomization(args: argparse.Namespace) -> None:
    from cambench.metrics.randomization import run_randomization

    device = _runtime(args)
    frame = run_randomization(
        args.model,
        args.data,
        args.out,
        method=args.method,
        params=args.params,
        layer=args.layer or None,
        n_images=args.n_images,
        target=args.target,
        batch_size=args.batch_size,
        device=device,
        model_name=args.model_name,
        seed=args.seed,
        threshold=args.threshold,
    )
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def cmd_plot(args: argparse.Namespace) -> None:
    from cambench import plots

    if args.figure == "heatmap":
        plots.plot_summary_heatmap(args.inputs[0], args.out)
    elif args.figure == "bars":
        plots.plot_metric_bars(args.inputs[0], args.out)
    elif args.figure == "distributions":
        plots.plot_distributions(args.inputs, args.out, title=args.title)
    elif args.figure == "randomization":
        plots.plot_randomization(args.inputs, args.out, threshold=args.threshold)
    elif args.figure == "training":
        plots.plot_training(args.inputs, args.out)
    elif args.figure == "curves":
        import numpy as np

        groups: dict[str, list[str]] = {}
        for path in args.inputs:
            with np.load(path) as npz:
                groups.setdefault(str(npz["method"]), []).append(path)
        plots.plot_curves(groups, args.out, title=args.title)
    elif args.figure == "grid":
        import h5py

        groups = {}
        for path in args.inputs:
            with h5py.File(path, "r") as f:
                groups.setdefault(str(f.attrs["method"]), []).append(path)
        plots.plot_saliency_grid(
            args.data, groups, args.out, n_images=args.n_images, title=args.title
        )


def cmd_cache_inspect(args: argparse.Namespace) -> None:
    from cambench.cache import describe

    for path in args.files:
        print(describe(path))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cambench", description=__doc__.splitlines()[0])
    from cambench import __version__

    parser.add_argument("--version", action="version", version=f"cambench {__version__}")
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
    _add_runtime(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("saliency", help="compute one shard of saliency maps into HDF5")
    p.add_argument("--model", required=True, help="checkpoint (.pt)")
    p.add_argument("--data", required=True, help="test split (.h5)")
    p.add_argument("--method", required=True)
    p.add_argument("--params", type=_json, default={}, help="method parameters, as JSON")
    p.add_argument("--layer", default="", help="dotted target layer path (default: the model's)")
    p.add_argument("--n-images", type=int, required=True)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--target", choices=["label", "predicted"], default="label")
    p.add_argument("--out", required=True)
    _add_runtime(p)
    p.set_defaults(func=cmd_saliency)

    p = sub.add_parser("metrics", help="score one saliency shard; write per-image CSV and curves")
    p.add_argument("--model", required=True)
    p.add_argument("--model-name", default="")
    p.add_argument("--data", required=True)
    p.add_argument("--saliency", required=True)
    p.add_argument(
        "--metrics", type=_json, default={}, help="the config's metrics mapping, as JSON"
    )
    p.add_argument("--batch-size", type=int, default=64)
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
    p.add_argument("--experiment", default="")
    p.add_argument(
        "--models",
        type=_json,
        default=None,
        help="the config's models mapping (kind, base), as JSON: who is compared with whom",
    )
    p.add_argument("--randomization", nargs="*", default=[], help="randomization sanity-check CSVs")
    p.add_argument(
        "--statistics",
        type=_json,
        default={},
        help='bootstrap settings as JSON: {"resamples": 1000, "confidence": 0.95, "seed": 0}',
    )
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-tex", default="")
    p.add_argument("--comparison-csv", default="")
    p.add_argument("--comparison-md", default="")
    p.add_argument("--comparison-tex", default="")
    p.set_defaults(func=cmd_summarize)

    p = sub.add_parser(
        "randomization",
        help="model parameter randomization sanity check of one method on one model",
    )
    p.add_argument("--model", required=True, help="checkpoint (.pt)")
    p.add_argument("--model-name", default="")
    p.add_argument("--data", required=True, help="test split (.h5): its first --n-images images")
    p.add_argument("--method", required=True)
    p.add_argument("--params", type=_json, default={}, help="method parameters, as JSON")
    p.add_argument("--layer", default="", help="dotted target layer path (default: the model's)")
    p.add_argument("--n-images", type=int, default=32)
    p.add_argument("--target", choices=["label", "predicted"], default="label")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="seed of the re-initializations")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.99,
        help="flag the method as model-independent when its mean Spearman correlation "
        "stays at or above this through the cascade",
    )
    p.add_argument("--out", required=True, help="CSV, one row per cascade step")
    _add_runtime(p)
    p.set_defaults(func=cmd_randomization)

    p = sub.add_parser("plot", help="draw one figure (PNG, and a PDF beside it)")
    p.add_argument(
        "figure",
        choices=["heatmap", "bars", "distributions", "curves", "grid", "training", "randomization"],
    )
    p.add_argument(
        "inputs",
        nargs="+",
        help="summary.csv (heatmap, bars) | per-image CSVs (distributions) | curve .npz files "
        "| saliency .h5 files (grid) | histories (training) | randomization CSVs",
    )
    p.add_argument("--data", help="test split, for the saliency grid")
    p.add_argument("--n-images", type=int, default=6)
    p.add_argument("--title", default="")
    p.add_argument("--threshold", type=float, default=0.99, help="randomization: flag threshold")
    p.add_argument("--out", required=True, help="the PNG; the PDF gets the same name")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("cache", help="saliency cache tools")
    cache_sub = p.add_subparsers(dest="cache_command", required=True)
    q = cache_sub.add_parser("inspect", help="print a saliency file's provenance and shape")
    q.add_argument("files", nargs="+")
    q.set_defaults(func=cmd_cache_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"cambench {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
