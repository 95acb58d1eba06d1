"""Shared fixtures: small models and images sized for 2 CPU cores."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from cambench.models import build_model

REPO = Path(__file__).resolve().parents[1]

torch.set_num_threads(1)

#: pytest-xdist workers for ``-n auto`` (pyproject's addopts): one per CPU, at most this
#: many — the workflow tests run Snakemake with 2 cores each.
MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: the CPUs this process may use, capped at :data:`MAX_WORKERS`."""
    return min(len(os.sched_getaffinity(0)), MAX_WORKERS)


# The randomization cascade of cambench's SmallResNet: its blocks from the output down.
SMALL_RESNET_CASCADE = ("fc", "layer4", "layer3", "layer2", "layer1", "stem")


def perturb_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give batch norms non-trivial statistics so an untrained model is not degenerate."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
    return model


@pytest.fixture
def small_resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return perturb_batchnorm(build_model({"width": 8, "blocks": [1, 1, 1, 1]}, 10)).eval()


def small_mobilenet() -> torch.nn.Module:
    """A narrow torchvision MobileNet-V2 (ReLU6, 10 classes) behind ImageNet normalization:
    a non-ResNet model for peer comparisons; ``1.features`` is its last stage."""
    from torchvision.models import mobilenet_v2

    from cambench.models.normalization import Normalize

    torch.manual_seed(0)
    net = perturb_batchnorm(mobilenet_v2(num_classes=10, width_mult=0.35))
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    return torch.nn.Sequential(Normalize(mean, std), net).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def targets() -> torch.Tensor:
    return torch.tensor([0, 3, 5, 7, 9, 1])


WORKFLOW_FILES = ("Snakefile", "config.yaml", "rules", "workflow", "profiles", "envs")


def copy_workflow(dest: Path) -> Path:
    """A copy of the workflow (no results) for tests that run Snakemake."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    shutil.copy2(REPO / "tests" / "config.tiny.yaml", dest / "tiny.yaml")
    return dest


def snakemake(workdir: Path, *args: str, check: bool = True):
    """Run Snakemake in ``workdir``; return the completed process (stdout+stderr)."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def tiny_run_template(tmp_path_factory) -> Path:
    """The tiny experiment (tests/config.tiny.yaml, as ``tiny.yaml``) run once per test
    session — once for all pytest-xdist workers, the first to ask runs it while the
    others wait on a file lock. Tests never change it: they take a :func:`copy_of_run`
    of it, on which Snakemake finds every job done and reruns only what their own
    config changes."""
    from filelock import FileLock

    # under xdist the session's directory, above every worker's; else this session's
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if "PYTEST_XDIST_WORKER" in os.environ else base
    workdir, done = shared / "tiny-run-template", shared / "tiny-run-template.done"
    with FileLock(str(shared / "tiny-run-template.lock")):
        if not done.exists():
            shutil.rmtree(workdir, ignore_errors=True)  # a failed try of another worker
            copy_workflow(workdir)
            snakemake(workdir, "--cores", "2", "--configfile", "tiny.yaml")
            done.touch()
    return workdir


def copy_of_run(template: Path, dest: Path) -> Path:
    """A copy of a finished workflow directory: its results, logs and Snakemake's
    metadata (``.snakemake/``), with every file's modification time kept, so nothing in
    it is stale."""
    shutil.copytree(template, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def planned_jobs(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count}."""
    jobs: dict[str, int] = {}
    lines = output.splitlines()
    if "Job stats:" not in lines:
        return jobs
    for line in lines[lines.index("Job stats:") + 3 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or parts[0] == "total":
            break
        jobs[parts[0]] = int(parts[1])
    return jobs


@pytest.fixture
def registry():
    """Saliency methods and architectures that a test registers (plug-ins) are removed
    afterwards, so later tests see the built-in registries."""
    from cambench.models import ARCH_FACTORIES
    from cambench.saliency import METHODS

    methods, archs = set(METHODS), set(ARCH_FACTORIES)
    yield
    for name in set(METHODS) - methods:
        del METHODS[name]
    for name in set(ARCH_FACTORIES) - archs:
        del ARCH_FACTORIES[name]
