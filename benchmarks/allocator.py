#!/usr/bin/env python
"""CPU time of three workflow jobs with glibc malloc's defaults and with cambench's
tuning (cambench/allocator.py), and proof that their outputs are identical (a
benchmark, not a test).

On a finished default run (``snakemake --cores all`` in this directory, so that
``results/shapes`` holds the data, the models and the maps), it runs, each as its own
process exactly as the workflow does (``python -m cambench …``, one thread but the
training's two): the metrics of the baseline's Grad-CAM maps, the baseline's
Score-CAM maps, and one epoch of the gradient-aligned model. ``GLIBC_TUNABLES=``
(empty) keeps glibc's defaults, since cambench yields to the user's malloc settings.
Each is run ``--repeats`` times alternately; reported: the median wall time and the
user/system CPU seconds and minor page faults of ``os.wait4``.

    python benchmarks/allocator.py --output benchmarks/results/allocator-cpu.txt
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]


def jobs(results: Path, out: Path) -> dict[str, list[str]]:
    """The three commands, writing under ``out``."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    metrics = {"forward_batch_size": 512, "pointing_tolerance": 0.0}
    metrics |= {k: config["metrics"][k] for k in config["metrics"] if k not in metrics}
    metrics.pop("statistics")
    gradalign = {**config["models"]["gradalign"], "epochs": 1, "gpus": 1}
    data = results / "data"
    run = [sys.executable, "-m", "cambench"]
    common = ["--device", "cpu", "--threads", "1", "--no-progress"]
    return {
        "metrics (baseline, Grad-CAM maps)": run
        + [
            "metrics", "--model", str(results / "models/baseline.pt"), "--model-name",
            "baseline", "--data", str(data / "test.h5"), "--saliency",
            str(results / "saliency/baseline/gradcam/shard-0.h5"), "--metrics",
            json.dumps(metrics), "--batch-size", "64", "--out-csv", str(out / "m.csv"),
            "--out-curves", str(out / "m.npz"), *common,
        ],
        "saliency (baseline, Score-CAM)": run
        + [
            "saliency", "--model", str(results / "models/baseline.pt"), "--model-name",
            "baseline", "--data", str(data / "test.h5"), "--method", "scorecam",
            "--params", json.dumps({"batch_size": 256}), "--layer=", "--n-images", "200",
            "--shards", "1", "--shard", "0", "--batch-size", "64", "--target", "label",
            "--out", str(out / "s.h5"), *common,
        ],
        "train (gradalign, 1 epoch, 2 threads)": run
        + [
            "train", "--train", str(data / "train.h5"), "--test", str(data / "test.h5"),
            "--model", json.dumps(gradalign), "--name", "gradalign", "--no-resume",
            "--out-model", str(out / "g.pt"), "--out-history", str(out / "g.json"),
            "--device", "cpu", "--threads", "2", "--no-progress",
        ],
    }  # fmt: skip


def measure(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed: {proc.stderr.read().decode()[-2000:]}")
    return {"wall": wall, "user": usage.ru_utime, "sys": usage.ru_stime, "minflt": usage.ru_minflt}


def outputs(out: Path) -> dict[str, object]:
    """What the jobs computed (timings dropped), to compare the two settings."""
    table = pd.read_csv(out / "m.csv").drop(columns=["seconds"], errors="ignore")
    with h5py.File(out / "s.h5") as f:
        maps = f["saliency"][()]
    history = json.loads((out / "g.json").read_text())
    epoch = {k: v for k, v in history["epochs"][0].items() if k != "seconds"}
    return {"metrics": table, "maps": maps, "epoch": epoch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results/shapes"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop("GLIBC_TUNABLES", None)
    env["PYTHONPATH"] = str(ROOT / "workflow")
    settings = {"glibc defaults": {**env, "GLIBC_TUNABLES": ""}, "cambench tuning": env}
    rows, seen = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in settings:
            (Path(tmp) / name).mkdir()
        for job in jobs(args.results, Path(tmp)):
            runs = {name: [] for name in settings}
            for _ in range(args.repeats):
                for name, env_ in settings.items():
                    cmd = jobs(args.results, Path(tmp) / name)[job]
                    runs[name].append(measure(cmd, env_))
            for name, measured in runs.items():
                median = {k: statistics.median(m[k] for m in measured) for k in measured[0]}
                rows.append({"job": job, "malloc": name, **median})
                print(rows[-1], flush=True)
        for name in settings:
            seen[name] = outputs(Path(tmp) / name)
    a, b = seen.values()
    identical = (
        a["metrics"].equals(b["metrics"])
        and np.array_equal(a["maps"], b["maps"])
        and a["epoch"] == b["epoch"]
    )
    table = pd.DataFrame(rows)
    lines = [
        f"# benchmarks/allocator.py, {datetime.date.today()}, {platform.node()}, "
        f"{os.cpu_count()} CPUs, python {platform.python_version()}",
        f"# median of {args.repeats} alternating runs; outputs identical: {identical}",
        table.to_string(index=False, float_format=lambda v: f"{v:.2f}"),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)
    if not identical:
        raise SystemExit("the two settings computed different outputs")


if __name__ == "__main__":
    main()
