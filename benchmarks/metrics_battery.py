"""Time the added metrics (ROAD, faithfulness / monotonicity correlation, IROF,
sparseness, complexity, effective complexity) against Quantus 0.6 on the same model,
images and maps, per image on CPU, within one run (the machine is shared).

    python benchmarks/metrics_battery.py --threads 1 --repeats 2 \\
        --output benchmarks/results/metrics-cpu.txt

Two cases: the default experiment's model (config.yaml ``models.baseline``) at its
32 px, 64 images; torchvision's ResNet-18 (cambench's ``resnet18``) at 64 px, fewer
images (``--resnet-images``: its forwards are ~10x dearer). Models randomly
initialised, eval mode. cambench's metrics get the inference copy the metrics job
uses (:func:`cambench.models.inference.inference_copy`); Quantus gets the model
itself, as its users pass it. Both sides use the same settings:

- ROAD: percentages 10..90, MoRF. cambench's ``road`` computes MoRF *and* LeRF (2 x 9
  imputed images per image), ``road_morf`` MoRF only (9, as ``metrics.include:
  [road_morf]``), Quantus MoRF only (9); Quantus's ROAD indexes pixels by C·H·W
  positions of the broadcast map and fails on 3 channels, so it runs on one channel
  (a 1x1 conv stem in front of the model: less imputation work than cambench's 3);
- faithfulness correlation: 100 subsets of 224 pixels (Quantus: of 224 channel values);
- monotonicity correlation: 10 samples; Quantus ``features_in_step`` H·W/16 (it must
  divide H·W) of its 3·H·W channel values: 48 groups; cambench ``pixels_per_step``
  ceil(H·W/48) pixels: 47 (32 px) or 48 (64 px) groups, about the same forwards;
- IROF: the same 8 x 8 grid segments on both sides (Quantus's SLIC replaced), one
  channel for Quantus (it asserts mask and image shapes equal);
- complexity metrics: no model.

Rounds interleave the metrics and both sides (cambench, Quantus, next metric ...), so
a change of machine load affects both, after a warm-up round of cambench's side;
reported: the best time of ``--repeats`` rounds, the speed-up of the best times and
the median over rounds of the per-round ratio (robust to a load that changes between
rounds). Each round also measures the forward pass each side pays (ms per image: the
inference copy at cambench's 64 images per forward, the model itself at Quantus's
batch: 1 image for ROAD, the whole batch for the others); with the forwards per image
this gives a forward-bound metric's ceiling: Quantus's forward time over cambench's
(median over rounds), the speed-up of a metric that did nothing but its forwards.
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_model import default_model  # noqa: E402
from report import finish_report  # noqa: E402

import cambench  # noqa: E402
from cambench.metrics import draws  # noqa: E402
from cambench.metrics.complexity import complexity, effective_complexity, sparseness  # noqa: E402
from cambench.metrics.correlation import (  # noqa: E402
    faithfulness_correlation,
    monotonicity_correlation,
)
from cambench.metrics.irof import grid_segments, irof  # noqa: E402
from cambench.metrics.road import road  # noqa: E402
from cambench.models import build_model  # noqa: E402
from cambench.models.inference import inference_copy  # noqa: E402

PERCENTAGES = [10, 20, 30, 40, 50, 60, 70, 80, 90]
# images per forward of cambench's metrics on CPU (512, forward_batch_size's default,
# in versions before draws.CPU_FORWARD_BATCH: --label before, run on such a checkout)
CPU_FORWARD_BATCH = getattr(draws, "CPU_FORWARD_BATCH", 512)


@dataclass
class Row:
    name: str
    ours: Callable[[], object]
    theirs: Callable[[], object]
    forwards_ours: int  # per image
    forwards_theirs: int  # per image
    theirs_batch: int  # images per Quantus forward


@torch.no_grad()
def ms_per_forward(model: torch.nn.Module, images: torch.Tensor, batch: int) -> float:
    """Best of 3: ms per image forwarding ``images`` ``batch`` at a time."""
    best = float("inf")
    for _ in range(3):
        tic = time.perf_counter()
        for start in range(0, images.shape[0], batch):
            model(images[start : start + batch])
        best = min(best, time.perf_counter() - tic)
    return best / images.shape[0] * 1000


def build_rows(model, images, maps, targets) -> list[Row]:
    import quantus
    import quantus.metrics.faithfulness.irof as q_irof

    fast = inference_copy(model, torch.device("cpu"))
    b, c, s, _ = images.shape
    index = torch.arange(b)
    xn, yn, an = images.numpy(), targets.numpy(), maps[:, None].numpy()
    common = dict(model=model, x_batch=xn, y_batch=yn, device="cpu")
    one_channel = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 1), model).eval()
    common_1ch = dict(model=one_channel, x_batch=xn[:, :1].copy(), y_batch=yn, device="cpu")
    segments = grid_segments(s, s, 8).numpy()
    q_irof.utils.get_superpixel_segments = lambda **k: segments
    features_in_step = s * s // 16  # Quantus: 3·H·W / features_in_step = 48 groups
    pixels_per_step = -(-s * s // 48)
    steps = -(-s * s // pixels_per_step)

    def quantus_road():
        return quantus.ROAD(percentages=PERCENTAGES, disable_warnings=True)(
            a_batch=an, **common_1ch
        )

    return [
        Row(
            "road",
            lambda: road(fast, images, targets, maps, index),
            quantus_road,
            2 * len(PERCENTAGES),
            len(PERCENTAGES),
            1,
        ),
        Row(  # the curve Quantus computes: MoRF only (metrics.include: [road_morf])
            "road_morf",
            lambda: road(fast, images, targets, maps, index, orders=("morf",)),
            quantus_road,
            len(PERCENTAGES),
            len(PERCENTAGES),
            1,
        ),
        Row(
            "faithfulness_correlation",
            lambda: faithfulness_correlation(fast, images, targets, maps, index),
            lambda: quantus.FaithfulnessCorrelation(
                nr_runs=100, subset_size=224, return_aggregate=False, disable_warnings=True
            )(a_batch=an, softmax=True, **common),
            101,
            101,
            b,
        ),
        Row(
            "monotonicity_correlation",
            lambda: monotonicity_correlation(
                fast, images, targets, maps, index, pixels_per_step=pixels_per_step
            ),
            lambda: quantus.MonotonicityCorrelation(
                nr_samples=10,
                features_in_step=features_in_step,
                return_aggregate=False,
                disable_warnings=True,
            )(a_batch=an, softmax=True, **common),
            10 * steps + 1,
            10 * (c * s * s // features_in_step) + 1,
            b,
        ),
        Row(
            "irof",
            lambda: irof(fast, images, targets, maps),
            lambda: quantus.IROF(return_aggregate=False, disable_warnings=True)(
                a_batch=an, softmax=True, **common_1ch
            ),
            65,
            65,
            b,
        ),
        Row(
            "sparseness",
            lambda: sparseness(maps),
            lambda: quantus.Sparseness(disable_warnings=True)(a_batch=an.copy(), **common),
            0,
            0,
            b,
        ),
        Row(
            "complexity",
            lambda: complexity(maps),
            lambda: quantus.Complexity(disable_warnings=True)(a_batch=an.copy(), **common),
            0,
            0,
            b,
        ),
        Row(
            "effective_complexity",
            lambda: effective_complexity(maps),
            lambda: quantus.EffectiveComplexity(disable_warnings=True)(a_batch=an.copy(), **common),
            0,
            0,
            b,
        ),
    ]


def run_case(title, model, images, maps, targets, repeats, only=()) -> list[str]:
    rows = [r for r in build_rows(model, images, maps, targets) if not only or r.name in only]
    b = images.shape[0]
    fast = inference_copy(model, torch.device("cpu"))
    for row in rows:  # warm-up
        row.ours()
    # per round: every metric on both sides, then the forward passes each side pays
    # (ms per image), so that the ratios of a round share its machine load
    times: dict[str, tuple[list[float], list[float]]] = {r.name: ([], []) for r in rows}
    forwards: dict[str, list[float]] = {"ours": [], "theirs 1": [], "theirs b": []}
    for _ in range(repeats):
        for row in rows:
            # metrics without a model are timed over 20 calls (their times are tiny)
            calls = 1 if row.forwards_ours else 20
            for fn, bucket in zip((row.ours, row.theirs), times[row.name], strict=True):
                tic = time.perf_counter()
                for _ in range(calls):
                    fn()
                bucket.append((time.perf_counter() - tic) / calls)
        forwards["ours"].append(ms_per_forward(fast, images, CPU_FORWARD_BATCH))
        forwards["theirs 1"].append(ms_per_forward(model, images[:8], 1))
        forwards["theirs b"].append(ms_per_forward(model, images, b))
    fwd = {k: min(v) for k, v in forwards.items()}
    lines = [
        title,
        f"forward ms/image (best of rounds): cambench (inference copy, {CPU_FORWARD_BATCH} per "
        f"forward) {fwd['ours']:.2f}; Quantus (the model) {fwd['theirs 1']:.2f} at 1 per "
        f"forward, {fwd['theirs b']:.2f} at {b}",
        f"{'metric':26s} {'cambench':>9s} {'Quantus':>9s} {'speed-up':>9s} {'median':>7s}"
        f" {'fwd/img':>9s} {'fwd/img':>8s} {'fwd-bound':>10s}",
        f"{'':26s} {'ms/img':>9s} {'ms/img':>9s} {'(best)':>9s} {'ratio':>7s} {'cambench':>9s}"
        f" {'Quantus':>8s} {'ceiling':>10s}",
    ]
    for row in rows:
        t_ours, t_theirs = times[row.name]
        ours, theirs = min(t_ours) / b * 1000, min(t_theirs) / b * 1000
        median = statistics.median(q / o for o, q in zip(t_ours, t_theirs, strict=True))
        if row.forwards_ours:
            # per round: Quantus's forwards / cambench's, at that round's forward times
            ceilings = [
                row.forwards_theirs
                * (q1 if row.theirs_batch == 1 else qb)
                / (row.forwards_ours * o)
                for o, q1, qb in zip(*forwards.values(), strict=True)
            ]
            ceiling = f"{statistics.median(ceilings):9.1f}x"
        else:
            ceiling = f"{'-':>10s}"
        lines.append(
            f"{row.name:26s} {ours:9.2f} {theirs:9.2f} {theirs / ours:8.1f}x {median:6.1f}x "
            f"{row.forwards_ours:9d} {row.forwards_theirs:8d} {ceiling}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--resnet-images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", default="default,resnet18")
    parser.add_argument("--output", default="", help="append the report to this file")
    parser.add_argument("--label", default="after", help="the section title's tag")
    parser.add_argument("--metrics", default="", help="only these (comma-separated)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    np.trapz = np.trapezoid  # Quantus 0.6 on numpy 2
    cases = args.cases.split(",")
    only = tuple(m for m in args.metrics.split(",") if m)
    lines = [
        "",
        f"== Added metrics vs Quantus 0.6 (benchmarks/metrics_battery.py), {args.label} ==",
        f"date: {datetime.datetime.now().isoformat(timespec='seconds')}; cambench "
        f"{cambench.__version__}, torch {torch.__version__}, {platform.machine()}; "
        f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, load average at "
        f"start {os.getloadavg()[0]:.1f}; best of {args.repeats} interleaved rounds",
    ]
    g = torch.Generator().manual_seed(1)
    if "default" in cases:
        model, description, size, classes = default_model()
        b = args.images
        images = torch.rand(b, 3, size, size, generator=g)
        maps = torch.rand(b, size, size, generator=g)
        targets = torch.randint(0, classes, (b,), generator=g)
        lines += run_case(
            f"-- {description}, {b} images", model, images, maps, targets, args.repeats, only
        )
    if "resnet18" in cases:
        torch.manual_seed(0)
        model = build_model({"arch": "resnet18"}, 10).eval()
        b = args.resnet_images
        images = torch.rand(b, 3, 64, 64, generator=g)
        maps = torch.rand(b, 64, 64, generator=g)
        targets = torch.randint(0, 10, (b,), generator=g)
        lines += run_case(
            f"-- resnet18 (torchvision), 64x64, 10 classes, {b} images",
            model,
            images,
            maps,
            targets,
            args.repeats,
            only,
        )
    return finish_report(lines, args.output)


if __name__ == "__main__":
    sys.exit(main())
