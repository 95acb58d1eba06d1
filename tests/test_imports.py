"""Every module of the package imports on its own, in a fresh interpreter: no import
cycle (a cycle shows up as an ImportError for some import order), and none hidden by
a function-local import."""

from __future__ import annotations

import ast
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import cambench

PACKAGE_DIR = Path(cambench.__file__).parent


def _modules() -> list[str]:
    # __main__ runs the command line when imported
    return sorted(
        m.name
        for m in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="cambench.")
        if m.name != "cambench.__main__"
    )


# Run in a fresh interpreter: the third-party libraries are imported once, then each
# cambench module is imported in a child forked from that state, so every child starts
# with no cambench module loaded (what a cycle needs to show) without paying torch's
# import per module (one interpreter per module took about 3 minutes on 2 cores).
_FORK_EACH_IMPORT = """
import importlib, os, sys
import h5py, matplotlib, numpy, pandas, torch, yaml  # noqa: F401
assert not [m for m in sys.modules if m.split('.')[0] == 'cambench']
failed = []
for name in sys.argv[1:]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(name)
            message = ''
        except BaseException as error:
            message = f'{type(error).__name__}: {error}'
        os.write(write, message.encode()[:4000])
        os._exit(1 if message else 0)
    os.close(write)
    message = os.read(read, 4096).decode()
    os.close(read)
    _, status = os.waitpid(pid, 0)
    if status or message:
        failed.append((name, message or f'exit status {status}'))
print(failed)
sys.exit(1 if failed else 0)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_each_module_imports_alone_in_a_fresh_interpreter():
    modules = _modules()
    assert "cambench.jobs.metrics" in modules and "cambench.specs" in modules
    proc = subprocess.run(
        [sys.executable, "-c", _FORK_EACH_IMPORT, *modules],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_import_check_catches_a_cycle(tmp_path):
    """The check itself fails on a package with an import cycle."""
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from cyclic.b import B\nA = 1\n")
    (package / "b.py").write_text("from cyclic.a import A\nB = 2\n")
    proc = subprocess.run(
        [sys.executable, "-c", _FORK_EACH_IMPORT, "cyclic.a", "cyclic.b"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        timeout=300,
    )
    assert proc.returncode == 1
    # each module, imported first in its own child, fails on the other's partial import
    assert proc.stdout.count("circular import") == 2, proc.stdout
    assert "('cyclic.a', " in proc.stdout and "('cyclic.b', " in proc.stdout


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
