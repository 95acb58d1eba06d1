"""Time the added metrics (ROAD, faithfulness / monotonicity correlation, IROF,
sparseness, complexity, effective complexity) against Quantus 0.6 on the same model,
images and maps, per image on CPU, within one run (the machine is shared).

    python benchmarks/metrics_battery.py --images 8 --size 32

Model: cambench's SmallResNet (seeded, width 16) on ``--size`` px images. Quantus runs
with the same settings (its IROF on the same grid segments, np.trapz patched for
numpy 2); one-channel features differ from Quantus's channel values, which does not
change the work per image.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cambench.metrics.complexity import complexity, effective_complexity, sparseness
from cambench.metrics.correlation import faithfulness_correlation, monotonicity_correlation
from cambench.metrics.irof import grid_segments, irof
from cambench.metrics.road import road
from cambench.models.inference import inference_copy
from cambench.models.small_resnet import SmallResNet


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import quantus
    import quantus.metrics.faithfulness.irof as q_irof

    np.trapz = np.trapezoid  # Quantus 0.6 on numpy 2
    torch.manual_seed(0)
    model = SmallResNet(num_classes=10, width=16).eval()
    fast = inference_copy(model, torch.device("cpu"))
    b, s = args.images, args.size
    x = torch.rand(b, 3, s, s)
    a = torch.rand(b, s, s)
    y = torch.randint(0, 10, (b,))
    idx = torch.arange(b)
    xn, yn, an = x.numpy(), y.numpy(), a[:, None].numpy()
    q = dict(model=model, x_batch=xn, y_batch=yn, device="cpu")
    seg = grid_segments(s, s, 8).numpy()
    q_irof.utils.get_superpixel_segments = lambda **k: seg
    pct = [10, 20, 30, 40, 50, 60, 70, 80, 90]
    cases = {
        "road": (
            lambda: road(fast, x, y, a, idx),
            # Quantus's ROAD indexes pixels by C·H·W positions of the broadcast map and
            # fails on 3 channels: timed on one channel (a 1x1 conv stem), less work
            lambda: quantus.ROAD(percentages=pct, disable_warnings=True)(
                model=torch.nn.Sequential(torch.nn.Conv2d(1, 3, 1), model).eval(),
                x_batch=xn[:, :1].copy(),
                y_batch=yn,
                a_batch=an,
                device="cpu",
            ),
        ),
        "faithfulness_correlation": (
            lambda: faithfulness_correlation(fast, x, y, a, idx),
            lambda: quantus.FaithfulnessCorrelation(
                nr_runs=100, subset_size=224, return_aggregate=False, disable_warnings=True
            )(a_batch=an, softmax=True, **q),
        ),
        "monotonicity_correlation": (
            lambda: monotonicity_correlation(fast, x, y, a, idx),
            lambda: quantus.MonotonicityCorrelation(
                nr_samples=10,
                features_in_step=64,
                return_aggregate=False,
                disable_warnings=True,
            )(a_batch=an, **q),
        ),
        "irof": (
            lambda: irof(fast, x, y, a),
            # Quantus's IROF asserts mask and image shapes equal: one channel as for ROAD
            lambda: quantus.IROF(return_aggregate=False, disable_warnings=True)(
                model=torch.nn.Sequential(torch.nn.Conv2d(1, 3, 1), model).eval(),
                x_batch=xn[:, :1].copy(),
                y_batch=yn,
                a_batch=an,
                device="cpu",
            ),
        ),
        "sparseness": (
            lambda: sparseness(a),
            lambda: quantus.Sparseness(disable_warnings=True)(a_batch=an.copy(), **q),
        ),
        "complexity": (
            lambda: complexity(a),
            lambda: quantus.Complexity(disable_warnings=True)(a_batch=an.copy(), **q),
        ),
        "effective_complexity": (
            lambda: effective_complexity(a),
            lambda: quantus.EffectiveComplexity(disable_warnings=True)(a_batch=an.copy(), **q),
        ),
    }
    print(f"SmallResNet width 16, {b} images at {s} px, 1 thread, best of {args.repeats}")
    print(f"{'metric':26s} {'cambench ms/img':>16s} {'Quantus ms/img':>15s} {'speed-up':>9s}")
    for name, (ours, theirs) in cases.items():
        t_ours = best(ours, args.repeats) / b * 1000
        t_theirs = best(theirs, args.repeats) / b * 1000
        print(f"{name:26s} {t_ours:16.2f} {t_theirs:15.2f} {t_theirs / t_ours:8.1f}x")


if __name__ == "__main__":
    main()
