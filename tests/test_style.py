"""The project's own checks: ruff, snakefmt and Snakemake's linter stay clean."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from conftest import REPO


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)


@pytest.mark.skipif(
    shutil.which("ruff") is None, reason="ruff not installed (pip install -e '.[test]')"
)
def test_ruff_lint_and_format():
    lint = _run("ruff", "check", "workflow", "tests", "benchmarks")
    assert lint.returncode == 0, lint.stdout
    fmt = _run("ruff", "format", "--check", "workflow", "tests", "benchmarks")
    assert fmt.returncode == 0, fmt.stdout


@pytest.mark.skipif(
    shutil.which("snakefmt") is None, reason="snakefmt not installed (pip install -e '.[test]')"
)
def test_snakefmt():
    proc = _run("snakefmt", "--check", "Snakefile", "rules")
    assert proc.returncode == 0, proc.stderr


def test_snakemake_lint():
    proc = _run(sys.executable, "-m", "snakemake", "--lint")
    assert proc.returncode == 0 and "Lints for" not in proc.stdout + proc.stderr, (
        proc.stdout + proc.stderr
    )
