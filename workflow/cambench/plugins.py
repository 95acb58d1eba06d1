"""Plug-ins: user code that registers saliency methods and model architectures.

A plug-in is a Python file (a path relative to the working directory) or an
importable module named by the config's ``plugins:`` list, or an installed package
that declares an entry point in the group ``cambench.plugins``. Importing it runs its
``@cambench.saliency.register(...)`` and ``@cambench.models.register_arch(...)``
decorators; afterwards the workflow treats what it registered like a built-in.

Every job loads the same plug-ins before it resolves a method or a model (the CLI's
``--plugins``, which the rules pass through ``CAMBENCH_PLUGINS``), and
:func:`cambench.specs.parse_config` loads them so that method names and parameters
validate. A plug-in that fails to import is one ValueError naming it.

This module imports no torch (the Snakefile parses the config through it).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ENTRY_POINT_GROUP = "cambench.plugins"
#: The environment variable through which the rules pass the plug-in list to every job.
ENV_VAR = "CAMBENCH_PLUGINS"

_LOADED: dict[str, types.ModuleType] = {}
_ENTRY_POINTS_LOADED = False


def is_file_plugin(spec: str) -> bool:
    """A plug-in named by a file path (``*.py`` or containing a slash), not a module name."""
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def _load_file(spec: str) -> types.ModuleType:
    path = Path(spec).resolve()
    if not path.is_file():
        raise ValueError(
            f"config key 'plugins': plug-in file {spec} does not exist (paths are relative "
            f"to the working directory {os.getcwd()})"
        )
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    stem = re.sub(r"\W", "_", path.stem)
    name = f"cambench_plugin_{stem}_{digest}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # inspect.getsource needs it
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _load(spec: str, what: str) -> types.ModuleType:
    """Import one plug-in; any error becomes one ValueError naming ``what``."""
    try:
        if is_file_plugin(spec):
            return _load_file(spec)
        return importlib.import_module(spec)
    except ValueError as err:
        if str(err).startswith("config key 'plugins'"):
            raise
        raise ValueError(f"{what}: {err}") from None
    except Exception as err:  # SyntaxError, ImportError, errors in the plug-in's code
        raise ValueError(f"{what} failed to import: {type(err).__name__}: {err}") from None


def load_entry_points() -> None:
    """Load every installed ``cambench.plugins`` entry point (once per process)."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = f"entry point {entry.name} = {entry.value}"
        if key not in _LOADED:
            try:
                entry.load()
            except ValueError as err:
                raise ValueError(f"plug-in {key}: {err}") from None
            except Exception as err:
                raise ValueError(
                    f"plug-in {key} failed to import: {type(err).__name__}: {err}"
                ) from None
            _LOADED[key] = sys.modules.get(entry.module) or types.ModuleType(entry.module)


def load_plugins(specs: Sequence[str] = ()) -> None:
    """Import the entry-point plug-ins and ``specs`` (file paths or module names), each
    once per process. ValueError naming the plug-in when one fails."""
    if isinstance(specs, str) or not all(isinstance(s, str) and s for s in specs):
        raise ValueError(
            f"config key 'plugins': a list of file paths or module names, got {specs!r}"
        )
    load_entry_points()
    for spec in specs:
        key = str(Path(spec).resolve()) if is_file_plugin(spec) else spec
        if key not in _LOADED:
            _LOADED[key] = _load(spec, f"plug-in {spec}")


def plugins_from_env() -> list[str]:
    """The plug-in list in :data:`ENV_VAR` (JSON), empty when unset."""
    import json

    text = os.environ.get(ENV_VAR, "")
    if not text:
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{ENV_VAR} is not a JSON list: {text!r} ({err})") from None
    if not isinstance(value, list):
        raise ValueError(f"{ENV_VAR} is not a JSON list: {text!r}")
    return value


def _in_package(obj: Any) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module == "cambench" or module.startswith("cambench.")


def source_file(obj: Any) -> str | None:
    """The file that defines ``obj`` when it comes from outside cambench (a plug-in),
    else ``None``."""
    if _in_package(obj):
        return None
    try:
        return inspect.getsourcefile(inspect.unwrap(obj))
    except (TypeError, OSError):
        return None


def source_digest(obj: Any) -> str:
    """SHA-256 (16 hex) of the whole file defining a plug-in's ``obj``; ``""`` for
    cambench's own code (whose digest :mod:`cambench.provenance` computes)."""
    path = source_file(obj)
    if path is None:
        return ""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return ""
    return hashlib.sha256(data).hexdigest()[:16]
