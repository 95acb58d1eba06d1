#!/usr/bin/env python
"""Peak memory of a saliency job and a metrics job against the size of the test split
(a benchmark, not a test).

For each ``--sizes`` N it writes a ``--image-size`` px ``shapes`` test split of N images (the first
``--distinct`` generated images, repeated: the content does not matter here) and the
default experiment's baseline model (config.yaml ``models.baseline``, randomly
initialised), then runs, each as its own process exactly as the workflow does
(``python -m cambench saliency`` / ``metrics``), each of ``--methods`` on the first
``--n-images`` test images and the metrics of the last one's maps, and reports each
process's peak resident
set size (``ru_maxrss`` of ``os.wait4``) and wall time. With streaming reads the
peak does not depend on N: a job reads its shard's images batch by batch; a job
that reads the whole split grows by its size (N × 3 × H × W bytes of images and
N × H × W of masks).

``--package DIR`` runs the jobs with another checkout's ``workflow/`` directory on
``PYTHONPATH`` (to measure an older version the same way).

    python benchmarks/memory.py --output benchmarks/results/memory-cpu.txt
    python benchmarks/memory.py --sizes 2000 20000 --image-size 224 \\
        --methods gradcam scorecam --n-images 32 --batch-size 16 --output …
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from cambench.data.shapes import CLASS_NAMES, generate_shapes  # noqa: E402
from cambench.data.store import SplitWriter  # noqa: E402
from cambench.models import build_model, save_checkpoint  # noqa: E402
from cambench.saliency import get_method  # noqa: E402

METRICS = {"forward_batch_size": 128, "pointing_tolerance": 0.0, "protocol": "custom", "steps": 8}


def write_test_split(path: Path, n: int, distinct: int, size: int) -> None:
    images, labels, masks = generate_shapes(distinct, image_size=size, num_classes=10, seed=1)
    with SplitWriter(path, (size, size), list(CLASS_NAMES[:10]), {"dataset": "shapes"}) as w:
        for start in range(0, n, distinct):
            k = min(distinct, n - start)
            w.append(images[:k], labels[:k], masks[:k])


def write_model(path: Path) -> str:
    config = yaml.safe_load((REPO / "config.yaml").read_text())["models"]["baseline"]
    entry = {k: config[k] for k in ("kind", "arch", "width", "blocks") if k in config}
    entry.setdefault("arch", "resnet_small")
    torch.manual_seed(0)
    save_checkpoint(path, build_model(entry, 10), entry, 10, list(CLASS_NAMES[:10]))
    return json.dumps(entry)


def run_job(args: list[str], package: Path, log: Path) -> tuple[float, float]:
    """Peak RSS (MB) and wall seconds of ``python -m cambench ARGS``."""
    env = dict(os.environ, PYTHONPATH=str(package))
    tic = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cambench", *args], env=env, stdout=out, stderr=out
        )
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - tic
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"job failed ({proc.returncode}): {' '.join(args)}\n{log.read_text()}")
    return usage.ru_maxrss / 1024, seconds  # Linux: kilobytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 4000])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--distinct", type=int, default=500)
    parser.add_argument("--n-images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--methods", nargs="+", default=["gradcam"])
    parser.add_argument("--package", type=Path, default=REPO / "workflow")
    parser.add_argument("--label", default="", help="a name for --package in the output")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = tmp / "model.pt"
        entry = write_model(model)
        for n in args.sizes:
            data = tmp / f"test-{n}.h5"
            write_test_split(data, n, args.distinct, args.image_size)
            common = ["--model", str(model), "--model-name", "baseline", "--data", str(data)]
            row = [n, n * (3 + 1) * args.image_size**2 / 1e6, data.stat().st_size / 1e6]
            for method in args.methods:
                maps = tmp / f"maps-{n}-{method}.h5"
                params = get_method(method).resolve_params({})
                rss_s, sec_s = run_job(
                    [
                        "saliency",
                        *common,
                        *["--method", method, "--params", json.dumps(params), "--layer="],
                        *["--n-images", str(args.n_images), "--shards", "1", "--shard", "0"],
                        *["--batch-size", str(args.batch_size), "--target", "label"],
                        *["--device", "cpu", "--threads", "1", "--out", str(maps)],
                    ],
                    args.package,
                    tmp / f"saliency-{n}-{method}.log",
                )
                row += [rss_s, sec_s]
                print(f"N={n}: {method} saliency {rss_s:.0f} MB, {sec_s:.0f} s", flush=True)
            expect = {"model": "baseline", "method": method, "params": params, "shard": 0}
            expect.update(shards=1, n_images=args.n_images)
            rss_m, sec_m = run_job(
                [
                    "metrics",
                    *common,
                    *["--saliency", str(maps), "--metrics", json.dumps(METRICS)],
                    *["--expect", json.dumps(expect), "--batch-size", str(args.batch_size)],
                    *["--device", "cpu", "--threads", "1"],
                    *[
                        "--out-csv",
                        str(tmp / f"m-{n}.csv"),
                        "--out-curves",
                        str(tmp / f"m-{n}.npz"),
                    ],
                ],
                args.package,
                tmp / f"metrics-{n}.log",
            )
            rows.append((*row, rss_m, sec_m))
            print(f"N={n}: metrics {rss_m:.0f} MB, {sec_m:.0f} s", flush=True)

    lines = [
        f"# benchmarks/memory.py — {datetime.date.today()} — {platform.node()} "
        f"({os.cpu_count()} CPUs), torch {torch.__version__}",
        f"# package: {args.package}{f' ({args.label})' if args.label else ''}",
        f"# model: {entry} (random init); {', '.join(args.methods)}, then the metrics of "
        f"the last one's maps ({json.dumps(METRICS)})",
        f"# on the first {args.n_images} test images, batch {args.batch_size}, "
        f"{args.image_size} px, one process per job, --threads 1",
        "",
        f"{'split images':>12}  {'uint8+mask MB':>13}  {'file MB':>7}  "
        + "  ".join(f"{m + ' peak RSS MB':>22}  {'s':>5}" for m in args.methods)
        + f"  {'metrics peak RSS MB':>19}  {'s':>5}",
    ]
    for n, split_mb, file_mb, *jobs in rows:
        cells = "  ".join(
            f"{jobs[2 * i]:>22.0f}  {jobs[2 * i + 1]:>5.1f}" for i in range(len(jobs) // 2)
        )
        lines.append(f"{n:>12}  {split_mb:>13.1f}  {file_mb:>7.1f}  {cells}")
    first, last = rows[0], rows[-1]
    growth = ", ".join(
        f"{name} {last[3 + 2 * i] - first[3 + 2 * i]:+.0f} MB"
        for i, name in enumerate([*args.methods, "metrics"])
    )
    lines.append(
        f"\npeak RSS growth from {first[0]} to {last[0]} images: {growth} "
        f"(the split's uint8 images and masks grow by {last[1] - first[1]:.0f} MB)"
    )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with open(args.output, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
