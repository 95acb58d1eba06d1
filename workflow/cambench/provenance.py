"""Digests of the code a workflow step runs, so Snakemake reruns what a code change
made stale (it does not track imported modules itself).

:func:`code_digest` follows the functions, classes and modules of cambench that a
step's entry points reference, transitively, and hashes their source. Editing one
saliency method's function therefore changes that method's digest only, while an
edit to shared machinery (e.g. ``saliency/core.py``) changes every method's.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import types
from collections.abc import Iterator
from typing import Any

from cambench.models.external import ARCH_FACTORIES
from cambench.plugins import source_digest
from cambench.saliency import get_method

PACKAGE = "cambench"


def _in_package(obj: Any) -> bool:
    name = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
    return isinstance(name, str) and (name == PACKAGE or name.startswith(PACKAGE + "."))


def _code_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_names(const)


def _import_submodule(name: str) -> None:
    """Import ``name`` if it is a submodule (a name in a function-local import)."""
    try:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
    except ImportError:
        pass


def _references(obj: Any) -> Iterator[Any]:
    """The package objects that ``obj``'s code names: globals, and the names a
    function-local ``from cambench.x import y`` brings in."""
    if inspect.isclass(obj):
        for member in vars(obj).values():
            func = getattr(member, "__func__", member)
            if inspect.isfunction(func):
                yield from _references(func)
        yield from obj.__bases__
        return
    func = inspect.unwrap(obj)
    if not inspect.isfunction(func):
        return
    names = list(_code_names(func.__code__))
    found = [func.__globals__[n] for n in names if n in func.__globals__]
    modules = [
        importlib.import_module(n) for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")
    ]
    modules += [o for o in found if isinstance(o, types.ModuleType) and _in_package(o)]
    yield from found
    for module in modules:  # `module.attr` and function-local `from cambench.x import y`
        yield module
        for name in names:
            if name not in vars(module) and hasattr(module, "__path__"):
                _import_submodule(f"{module.__name__}.{name}")
            value = vars(module).get(name)
            if isinstance(value, types.ModuleType) and value not in modules:
                modules.append(value)  # the loop visits it too
            elif value is not None:
                yield value


def code_closure(*roots: Any) -> list[Any]:
    """Every package function, class and module reachable from ``roots`` (a root
    outside the package, e.g. a plug-in's method, is followed into the package too)."""
    seen: dict[int, Any] = {}
    stack = list(roots)
    root_ids = {id(r) for r in roots}
    while stack:
        obj = stack.pop()
        if id(obj) in seen or not (_in_package(obj) or id(obj) in root_ids):
            continue
        if not (
            inspect.isfunction(obj) or inspect.isclass(obj) or isinstance(obj, types.ModuleType)
        ):
            continue
        seen[id(obj)] = obj
        stack.extend(_references(obj))
    return list(seen.values())


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return repr(obj)


def _sort_key(obj: Any) -> tuple[str, str]:
    return (getattr(obj, "__module__", None) or obj.__name__, getattr(obj, "__qualname__", ""))


def code_digest(*roots: Any) -> str:
    """A short hex digest of the source of everything :func:`code_closure` reaches."""
    digest = hashlib.sha256()
    for obj in sorted(code_closure(*roots), key=_sort_key):
        digest.update(_source(obj).encode())
    return digest.hexdigest()[:16]


#: The job module of each workflow stage (see :mod:`cambench.jobs`).
STAGES = {
    "data": "prepare",
    "train": "train",
    "saliency": "saliency",
    "metrics": "metrics",
    "summary": "summarize",
    "plots": "plot",
    "sanity": "sanity",
    "convert": "convert",
    "datarand": "datarand",
}


@functools.cache
def _closure_digest(*roots: Any) -> str:
    """:func:`code_digest`, once per process for the same function objects."""
    return code_digest(*roots)


def stage_digest(stage: str, method: str | None = None) -> str:
    """The code digest of one workflow stage: its job's ``run`` and everything it
    reaches (``saliency`` and ``sanity`` also need the method, whose function is not
    reachable by name from the job). Cached per function object, not per name: a
    plug-in re-registered under the same name, or its file edited, gives a new digest."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}")
    job = importlib.import_module(f"cambench.jobs.{STAGES[stage]}")
    if stage in ("saliency", "sanity", "datarand"):
        if method is None:
            raise ValueError(f"the {stage} stage's digest needs the method")
        fn = get_method(method).fn
        return _with_plugin(_closure_digest(job.run, fn), source_digest(fn))
    return _closure_digest(job.run)


stage_digest.cache_clear = _closure_digest.cache_clear  # type: ignore[attr-defined]


def _with_plugin(digest: str, plugin: str) -> str:
    """``digest``, extended by a plug-in file's digest where there is one (cambench's
    own methods and architectures keep their digest as it was)."""
    return f"{digest}+{plugin}" if plugin else digest


def arch_digest(model_config: dict[str, Any]) -> str:
    """The digest of the plug-in file that registers a model config's ``arch`` (``""``
    for torchvision:, timm: and cambench's archs): it enters the code digest of the
    job that builds the model, so editing the plug-in rebuilds it and what follows."""
    factory = ARCH_FACTORIES.get(model_config.get("arch", ""))
    return source_digest(factory) if factory is not None else ""


@functools.cache
def _stage(stage: str) -> str:
    return stage_digest(stage)


def model_digest(stage: str, model_config: dict[str, Any]) -> str:
    """The code digest of the job (``train`` or ``convert``) that makes one model."""
    return _with_plugin(_stage(stage), arch_digest(model_config))
