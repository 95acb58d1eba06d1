#!/usr/bin/env python
"""One training epoch of the default baseline on 2 threads with OpenMP's default wait
policy and with ``OMP_WAIT_POLICY=PASSIVE`` (what every cambench command sets, see
cambench/openmp.py), on idle cores and beside ``--busy`` other busy processes (a
benchmark, not a test).

Needs a prepared default split (``results/shapes/data``, from ``snakemake --cores all``
or its ``prepare_data`` job). Each setting runs ``python -m cambench train`` for one
epoch, alternating the two policies, ``--repeats`` times; ``OMP_WAIT_POLICY=ACTIVE``
stands for the default (cambench leaves a policy the user set alone). Reported: the
median wall time and the CPU seconds (user + system, ``os.wait4``) of the job; the
busy processes are plain Python loops, one per ``--busy``.

    python benchmarks/contention.py --busy 0 2 --output benchmarks/results/contention-cpu.txt
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

import yaml

ROOT = Path(__file__).resolve().parents[1]
BUSY = "while True: pass"


def epoch(data: Path, out: Path, policy: str) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds and the history's last epoch (timing dropped)."""
    model = {**yaml.safe_load((ROOT / "config.yaml").read_text())["models"]["baseline"]}
    model.update(epochs=1, gpus=1)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow"), "OMP_WAIT_POLICY": policy}
    cmd = [sys.executable, "-m", "cambench", "train", "--train", str(data / "train.h5")]
    cmd += ["--test", str(data / "test.h5"), "--model", json.dumps(model), "--name", "b"]
    cmd += ["--out-model", str(out / "b.pt"), "--out-history", str(out / "b.json")]
    cmd += ["--device", "cpu", "--threads", "2", "--no-resume", "--no-progress"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(proc.stderr.read().decode()[-2000:])
    last = json.loads((out / "b.json").read_text())["epochs"][-1]
    last.pop("seconds")
    return wall, usage.ru_utime + usage.ru_stime, json.dumps(last, sort_keys=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("results/shapes/data"))
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    lines = [
        f"# benchmarks/contention.py, {datetime.date.today()}, {platform.node()}, "
        f"{os.cpu_count()} CPUs; one epoch of the default baseline, --threads 2, "
        f"median of {args.repeats} alternating runs",
        f"{'busy processes':>14}  {'OMP_WAIT_POLICY':>15}  {'wall s':>7}  {'CPU s':>6}",
    ]
    results = set()
    with tempfile.TemporaryDirectory() as tmp:
        for busy in args.busy:
            hogs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(busy)]
            try:
                runs: dict[str, list[tuple[float, float]]] = {"ACTIVE": [], "PASSIVE": []}
                for _ in range(args.repeats):
                    for policy, measured in runs.items():
                        wall, cpu, result = epoch(args.data, Path(tmp), policy)
                        measured.append((wall, cpu))
                        results.add(result)
            finally:
                for hog in hogs:
                    hog.kill()
            for policy, measured in runs.items():
                wall = statistics.median(m[0] for m in measured)
                cpu = statistics.median(m[1] for m in measured)
                lines.append(f"{busy:>14}  {policy:>15}  {wall:>7.1f}  {cpu:>6.1f}")
                print(lines[-1], flush=True)
    lines.append(f"# every run trained the same model: {len(results) == 1}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        with open(args.output, "a") as f:
            f.write(text + "\n")
    if len(results) != 1:
        raise SystemExit("the two policies trained different models")


if __name__ == "__main__":
    main()
