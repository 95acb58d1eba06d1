#!/usr/bin/env python
"""Cost of the faithfulness metrics against the forward passes they need (a benchmark,
not a test).

On the default experiment's baseline model (config.yaml's ``models.baseline``, randomly
initialised, eval mode) at the dataset's image size, for ``--images`` images and each
insertion/deletion protocol (Opti-CAM: one row per step; CA-Stream: eight rows per
step) it reports:

- ``insertion_deletion``: the time of the call (building every perturbed image from
  the pixel ranks, blurring the substrate, forwarding, gathering the probabilities);
- ``raw forward``: forwarding the same number of images (``images × 2 × (steps + 1)``),
  already built, in batches of the same size (``forward_batch_size``) under
  ``torch.no_grad`` through the model as given — the floor a plain implementation pays;
- ``fast forward``: the same through the inference copy the metrics use
  (:func:`cambench.models.inference.inference_copy`: batch norm folded, channels-last
  on CPU) — the floor of cambench's own forwards;
- the metric's time over each (goal: at most 1.2 × the raw forward), of the best
  times, and the median of the ratios of interleaved calls;

and the same for ``confidence_change`` (two forwards per image). Times come from
``--repeats`` calls after one warm-up call, the metric's and the raw forward's calls
interleaved in the same run (the reference machine is shared: use ``--threads 1``).

    python benchmarks/metrics.py --threads 1 --output benchmarks/results/metrics-cpu.txt

With ``--robustness SAMPLES`` it times only max/avg-sensitivity and relative input
stability (Grad-CAM, gradient, Score-CAM) against their floor, ``SAMPLES`` explanations
of the batch, and appends that table to ``--output``.

With ``--quantus`` it then times the added metrics (ROAD, faithfulness and
monotonicity correlation, IROF, sparseness, complexity, effective complexity) against
Quantus 0.6 on the same inputs (:mod:`metrics_battery`, appended to ``--output``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
from default_model import default_model

import cambench
from cambench.metrics import confidence_change, insertion_deletion
from cambench.models.inference import inference_copy


def interleaved_times(fns: list[Callable[[], object]], repeats: int) -> list[list[float]]:
    """Times of each of ``fns`` over ``repeats`` interleaved rounds (after a warm-up
    of each), so that a change of machine load affects all alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, fn_times in zip(fns, times, strict=True):
            tic = time.perf_counter()
            fn()
            fn_times.append(time.perf_counter() - tic)
    return times


@torch.no_grad()
def raw_forward(model: torch.nn.Module, images: torch.Tensor, batch_size: int) -> None:
    for start in range(0, images.shape[0], batch_size):
        model(images[start : start + batch_size])


def robustness_report(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    samples: int,
    repeats: int,
) -> list[str]:
    """Max/avg-sensitivity and relative input stability against their floor: ``samples``
    explanations of the same batch by the same method (interleaved calls, best times)."""
    from cambench.metrics.robustness import relative_input_stability, sensitivity
    from cambench.saliency import explain

    index = torch.arange(images.shape[0], device=images.device)
    fast = inference_copy(model, images.device)
    lines = [
        "",
        f"== Robustness metrics vs their floor ({samples} samples x one explanation of "
        f"{images.shape[0]} images) ==",
        f"{'method':<10} {'floor s':>8} {'sensitivity s':>14} {'x floor':>8} {'RIS s':>7}"
        f" {'x floor':>8}",
    ]
    for method in ("gradcam", "gradient", "scorecam"):

        def explain_fn(x: torch.Tensor, t: torch.Tensor, method: str = method) -> torch.Tensor:
            return explain(method, model, x, t).half().float()

        maps = explain_fn(images, targets)
        t_floor, t_sens, t_ris = interleaved_times(
            [
                lambda fn=explain_fn: [fn(images, targets) for _ in range(samples)],
                lambda fn=explain_fn, maps=maps: sensitivity(
                    fn, images, targets, maps, index, 0.02, samples
                ),
                lambda fn=explain_fn, maps=maps: relative_input_stability(
                    fast, fn, images, targets, maps, index, 0.02, samples
                ),
            ],
            repeats,
        )
        floor = min(t_floor)
        lines.append(
            f"{method:<10} {floor:>8.3f} {min(t_sens):>14.3f} {min(t_sens) / floor:>8.2f}"
            f" {min(t_ris):>7.3f} {min(t_ris) / floor:>8.2f}"
        )
    lines += [
        "sensitivity: max and avg from the same samples (one computation); RIS adds one forward",
        "per sample (the prediction check). x floor = best metric time / best floor time.",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=512, help="forward_batch_size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default="", help="also write the report to this file")
    parser.add_argument(
        "--quantus", action="store_true", help="then the added metrics against Quantus 0.6"
    )
    parser.add_argument(
        "--robustness",
        type=int,
        default=0,
        metavar="SAMPLES",
        help="only the robustness metrics against their floor, with this many samples",
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model, description, size, classes = default_model(device)
    fast = inference_copy(model, device)
    g = torch.Generator().manual_seed(1)
    images = torch.rand(args.images, 3, size, size, generator=g).to(device)
    maps = torch.rand(args.images, size, size, generator=g).to(device)
    targets = torch.randint(0, classes, (args.images,), generator=g).to(device)

    if args.robustness:
        report = "\n".join(robustness_report(model, images, targets, args.robustness, args.repeats))
        print(report)
        if args.output:
            with open(args.output, "a") as f:
                f.write(report + "\n")
        return 0
    lines = [
        "cambench metrics benchmark",
        f"date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"cambench {cambench.__version__}, torch {torch.__version__}, python "
        f"{platform.python_version()}, {platform.machine()}",
        f"device: {device}, torch threads: {torch.get_num_threads()}, "
        f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.1f}",
        f"model: {description}, random init, eval; "
        f"{args.images} images 3×{size}×{size}; forward batch {args.batch_size}; "
        f"{args.repeats} interleaved calls after a warm-up",
        "",
        f"{'metric':<44} {'forwards':>8} {'metric s':>9} {'raw fwd s':>10} {'fast fwd s':>11}"
        f" {'x raw':>6} {'x fast':>7} {'median x raw':>13}",
    ]
    rows = []
    for protocol, steps in (("opticam (1 row/step)", size), ("castream (8 rows/step)", size // 8)):
        n_forward = args.images * 2 * (steps + 1)
        perturbed = torch.rand(n_forward, 3, size, size, generator=g).to(device)
        t_metric, t_raw, t_fast = interleaved_times(
            [
                lambda steps=steps: insertion_deletion(
                    model,
                    images,
                    targets,
                    maps,
                    steps=steps,
                    insertion_substrate="blur",
                    deletion_substrate="black",
                    batch_size=args.batch_size,
                ),
                lambda perturbed=perturbed: raw_forward(model, perturbed, args.batch_size),
                lambda perturbed=perturbed: raw_forward(fast, perturbed, args.batch_size),
            ],
            args.repeats,
        )
        rows.append((f"insertion_deletion, {protocol}", n_forward, t_metric, t_raw, t_fast))
        del perturbed
    doubled = torch.cat([images, images])
    t_metric, t_raw, t_fast = interleaved_times(
        [
            lambda: confidence_change(model, images, targets, maps, batch_size=args.batch_size),
            lambda: raw_forward(model, doubled, args.batch_size),
            lambda: raw_forward(fast, doubled, args.batch_size),
        ],
        args.repeats,
    )
    rows.append(("confidence_change (AD/AI/AG)", 2 * args.images, t_metric, t_raw, t_fast))
    for name, n_forward, t_metric, t_raw, t_fast in rows:
        best_metric, best_raw, best_fast = min(t_metric), min(t_raw), min(t_fast)
        median = statistics.median(m / r for m, r in zip(t_metric, t_raw, strict=True))
        lines.append(
            f"{name:<44} {n_forward:>8} {best_metric:>9.3f} {best_raw:>10.3f} {best_fast:>11.3f}"
            f" {best_metric / best_raw:>6.2f} {best_metric / best_fast:>7.2f} {median:>13.2f}"
        )
    lines += [
        f"load average at end {os.getloadavg()[0]:.1f} (a shared machine: the interleaved",
        "calls see the same load; the times themselves vary between runs)",
        "",
        "metric s, raw fwd s, fast fwd s: best of the repeats; x raw = best metric time / best",
        "raw forward time of the same number of images through the model as given (goal <= 1.2);",
        "x fast = the same over the inference copy's forward (the metric's own floor); median",
        "x raw = median over the repeats of the interleaved ratios (robust to machine load).",
    ]
    report = "\n".join(lines)
    print(report)
    if args.output:
        with open(args.output, "w") as f:
            f.write(report + "\n")
    if args.quantus:
        import metrics_battery

        output = ["--output", args.output] if args.output else []
        metrics_battery.main(
            ["--threads", str(args.threads), "--images", str(args.images), *output]
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
