"""What cambench offers, listed for a person: ``cambench list methods|archs|metrics|keys``.

Every list is read from the place that defines it — the method registry (with each
method's parameters and defaults), the architecture registry and sources, the metric
table, the config schema — so it cannot fall behind the code. Plug-ins loaded before
the listing (``cambench --plugins '["my.py"]' list methods``) appear in it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import yaml

from cambench.metric_table import METRICS, TIME
from cambench.models import ARCH_FACTORIES, ARCHITECTURES
from cambench.saliency import METHODS
from cambench.specs import SCHEMA

KINDS = ("methods", "archs", "metrics", "keys")


def _value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else repr(value)


def method_lines() -> list[str]:
    """One line per registered method: name, parameters with defaults, summary."""
    lines = []
    for name in sorted(METHODS):
        spec = METHODS[name]
        params = ", ".join(f"{k}={_value(v)}" for k, v in spec.defaults.items()) or "-"
        where = f"  [plug-in {spec.source}]" if spec.source else ""
        layer = "" if spec.uses_layer else "  (no target layer)"
        lines.append(f"{name:22s} {params}{layer}{where}")
        if spec.summary:
            lines.append(f"{'':22s}   {spec.summary}")
    return lines


def arch_lines() -> list[str]:
    """cambench's architectures, plug-in architectures and the external sources."""
    lines = [
        f"{name:22s} cambench (kind baseline/gradalign/castream base)" for name in ARCHITECTURES
    ]
    lines += [f"{name:22s} plug-in" for name in sorted(ARCH_FACTORIES)]
    lines += [
        f"{'torchvision:<name>':22s} any torchvision classification model (kind: pretrained, or trained)",
        f"{'timm:<name>':22s} any timm model (pip install timm)",
        f"{'hf:<Class|model_type>':22s} a HuggingFace transformers image classifier (pip install transformers)",
    ]
    return lines


def metric_lines() -> list[str]:
    """Every reported metric: column, direction, unit, title."""
    return [
        f"{m.column:22s} {m.arrow} {m.direction} is better, {m.unit:3s} {m.title}"
        for m in (*METRICS, TIME)
    ]


def _schema_keys(schema: dict[str, Any], prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        yield path, sub
        yield from _schema_keys(sub, path + ".")
        extra = sub.get("additionalProperties")
        if isinstance(extra, dict) and "properties" in extra:
            yield from _schema_keys(extra, f"{path}.<name>.")


def key_lines() -> list[str]:
    """Every config key of the schema: its dotted path, type, default, description."""
    lines = []
    for path, sub in _schema_keys(yaml.safe_load(SCHEMA.read_text()), ""):
        kind = sub.get("type", "")
        kind = "|".join(kind) if isinstance(kind, list) else kind
        if "enum" in sub:
            kind = "|".join(map(str, sub["enum"]))
        default = f" = {_value(sub['default'])}" if "default" in sub else ""
        lines.append(f"{path}: {kind}{default}")
        if sub.get("description"):
            lines.append(f"    {sub['description']}")
    return lines


def listing(kind: str) -> str:
    """The text of ``cambench list <kind>``; ValueError naming the valid kinds."""
    lines = {
        "methods": method_lines,
        "archs": arch_lines,
        "metrics": metric_lines,
        "keys": key_lines,
    }.get(kind)
    if lines is None:
        raise ValueError(f"unknown list {kind!r}; valid: {', '.join(KINDS)}")
    return "\n".join(lines())
