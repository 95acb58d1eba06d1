"""Every module of the package imports on its own, in a fresh interpreter: no import
cycle (a cycle shows up as an ImportError for some import order), and none hidden by
a function-local import."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import cambench

PACKAGE_DIR = Path(cambench.__file__).parent


def _modules() -> list[str]:
    # __main__ runs the command line when imported
    return sorted(
        m.name
        for m in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="cambench.")
        if m.name != "cambench.__main__"
    )


def test_each_module_imports_alone_in_a_fresh_interpreter():
    modules = _modules()
    assert "cambench.jobs.metrics" in modules and "cambench.specs" in modules
    # one interpreter per module: each starts from an empty module cache
    script = (
        "import importlib, subprocess, sys\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    proc = subprocess.run([sys.executable, '-c', f'import {name}'],"
        " capture_output=True, text=True)\n"
        "    if proc.returncode:\n"
        "        failed.append((name, proc.stderr.strip().splitlines()[-1]))\n"
        "print(failed)\n"
        "sys.exit(1 if failed else 0)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, *modules], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_function_local_import_of_the_package():
    """Function-local imports of cambench modules are how cycles get hidden; the only
    ones allowed keep heavy dependencies out of a light module's import: specs.py
    (parsed by the Snakefile), cli.py (each command loads its job only), plugins.py
    (loads plug-ins by name) and data/__init__.py (a dataset's importer, e.g.
    torchvision's CIFAR, only when used)."""
    allowed = {"specs.py", "cli.py", "plugins.py", "data/__init__.py"}
    offenders = []
    for path in PACKAGE_DIR.rglob("*.py"):
        if str(path.relative_to(PACKAGE_DIR)) in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith(
                        "cambench"
                    ):
                        offenders.append(f"{path.relative_to(PACKAGE_DIR)}:{inner.lineno}")
    assert offenders == [], offenders
