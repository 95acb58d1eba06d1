"""Time ROAD's noisy linear imputation (cambench.metrics.road.noisy_linear_imputation)
against the same function at an earlier commit, per 3-channel system on CPU, within
one run (rounds interleaved, best of ``--repeats``):

    python benchmarks/road_imputation.py --before 97729a9 --threads 1 \\
        --output benchmarks/results/metrics-cpu.txt

Masks: half the systems a compact disc (the shape of a salient object, about 38 % of
the pixels), half a random half of the pixels. Also reports whether the two give the
same float32 images and their largest difference (both solve exactly in float64).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from cambench.metrics import road

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import finish_report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZES = ((32, 128), (64, 32), (128, 8), (224, 2))  # (pixels, systems)


def module_at(commit: str):
    """cambench.metrics.road as it was at ``commit`` (it imports only cambench modules
    whose interface it shares with today's)."""
    source = subprocess.run(
        ["git", "show", f"{commit}:workflow/cambench/metrics/road.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "road_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("road_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def masks(size: int, n: int, generator: torch.Generator) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    missing = torch.rand(n, size, size, generator=generator) < 0.5
    missing[: n // 2] = ((yy - size / 2) ** 2 + (xx - size / 3) ** 2) < (0.35 * size) ** 2
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the commit to compare with")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default="", help="append the report to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    before = module_at(args.before)
    lines = [
        "",
        f"== ROAD noisy linear imputation: HEAD vs {args.before} (benchmarks/road_imputation.py) ==",
        f"date: {datetime.datetime.now().isoformat(timespec='seconds')}; torch "
        f"{torch.__version__}; torch threads {torch.get_num_threads()}, {os.cpu_count()} "
        f"CPUs, load average at start {os.getloadavg()[0]:.1f}; best of {args.repeats}",
        "pixels  systems  before ms/system  now ms/system  speed-up  same float32  max diff",
    ]
    for size, n in SIZES:
        g = torch.Generator().manual_seed(0)
        images = torch.rand(n, 3, size, size, generator=g)
        missing = masks(size, n, g)
        times: dict[str, list[float]] = {"before": [], "now": []}
        for _ in range(args.repeats):
            for name, fn in (
                ("before", before.noisy_linear_imputation),
                ("now", road.noisy_linear_imputation),
            ):
                tic = time.perf_counter()
                out = fn(images, missing)
                times[name].append(time.perf_counter() - tic)
                if name == "before":
                    reference = out
        t_before, t_now = (min(times[k]) / n * 1000 for k in ("before", "now"))
        lines.append(
            f"{size:>6}  {n:>7}  {t_before:>16.2f}  {t_now:>13.2f}  {t_before / t_now:>7.2f}x"
            f"  {str(torch.equal(out, reference)):>11}  {(out - reference).abs().max():.1e}"
        )
    return finish_report(lines, args.output)


if __name__ == "__main__":
    sys.exit(main())
