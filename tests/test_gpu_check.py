"""benchmarks/gpu_check.sh and its Python part, on the CPU: the dry run (--cpu) goes
through every step and every registered method and writes its report; a failed check
makes the exit status non-zero; without CUDA the shell script only checks imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cambench.saliency.registry import METHODS

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
SMALL = ["--train-images", "128", "--test-images", "16", "--batch", "2", "--skip-benchmark"]


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "PYTHON": sys.executable},
    )


def test_dry_run_on_the_cpu_passes_every_step_and_writes_the_report(tmp_path):
    out = tmp_path / "report.txt"
    proc = _run("--cpu", *SMALL, "--output", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = out.read_text()
    for step in (
        "device",
        "train (bf16 AMP, channels_last)",
        "every saliency method, device vs CPU",
        "insertion/deletion on the device",
    ):
        assert f"PASS {step} (" in report, report
    assert "FAIL" not in report and report.rstrip().endswith("RESULT: all passed")
    method_lines = [line.split()[0] for line in report.splitlines() if line.startswith("  ")]
    assert set(METHODS) <= set(method_lines), report  # every method compared or n/a
    assert "castream_attention   n/a" in report  # needs a CA-Stream model


def test_a_failed_check_makes_the_exit_status_non_zero(tmp_path):
    out = tmp_path / "report.txt"
    proc = _run(
        "--cpu",
        *SMALL,
        "--methods",
        "fakecam,random",
        "--map-tolerance",
        "-1",
        "--output",
        str(out),
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = out.read_text()
    assert "FAIL every saliency method, device vs CPU" in report
    assert "RESULT: FAIL (every saliency method, device vs CPU)" in report
    assert "PASS insertion/deletion on the device" in report  # the other steps still ran


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_without_cuda_the_script_says_so_and_exits_0():
    proc = _run(timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no CUDA device" in proc.stdout
    assert not (REPO / "benchmarks" / "results" / "gpu-cpu-dry-run.txt").exists()
