"""Experiment configuration: how experiment files combine with the default, and
the checks the JSON schema cannot express (method names and their parameters).
"""

from __future__ import annotations

import copy
import json
from typing import Any

# Mappings an experiment file replaces instead of extending: a smaller experiment
# must not silently inherit every model and method of the default config (nor the
# default's list of methods for the sanity check, which names methods).
REPLACED_KEYS = ("models", "methods", "sanity")


def apply_experiment(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merged ``config`` with :data:`REPLACED_KEYS` taken whole from ``overrides``.

    Snakemake has already deep-merged ``--configfile``/``--config`` values over the
    Snakefile's ``configfile:``; this undoes the merge for the replaced keys.
    """
    for key in REPLACED_KEYS:
        if key in overrides:
            config[key] = copy.deepcopy(overrides[key])
    return config


def check_config(config: dict[str, Any]) -> None:
    """Fail, naming the key, on values the schema cannot check."""
    from cambench.saliency import METHODS

    methods = config.get("methods") or {}
    for name, params in methods.items():
        if name not in METHODS:
            raise ValueError(
                f"config key 'methods.{name}': unknown saliency method; valid methods: {', '.join(sorted(METHODS))}"
            )
        try:
            METHODS[name].resolve_params(params or {})
        except ValueError as err:
            raise ValueError(f"config key 'methods.{name}': {err}") from None
    from cambench.models import CASTREAM_BASE_ARCHS, check_model_config

    models = config.get("models") or {}
    for name, model in models.items():
        check_model_config(name, model)
        base = model.get("base")
        if base is None:
            continue
        if base not in models:
            raise ValueError(f"config key 'models.{name}.base': no model named {base!r}")
        if base == name or models[base].get("kind") == "castream":
            raise ValueError(
                f"config key 'models.{name}.base': the base of a CA-Stream model must be a "
                f"baseline or gradalign model, not {base!r}"
            )
        base_arch = models[base].get("arch", "resnet_small")
        if base_arch not in CASTREAM_BASE_ARCHS:
            raise ValueError(
                f"config key 'models.{name}.base': CA-Stream supports {', '.join(CASTREAM_BASE_ARCHS)}; "
                f"base model {base!r} is {base_arch!r}"
            )


def method_applies(model_config: dict[str, Any], method: str) -> bool:
    """Whether ``method`` is defined for this model: ``cam`` needs a GAP → ``fc`` head,
    ``castream_attention`` a CA-Stream model. The workflow skips the other pairs."""
    from cambench.models import GAP_FC_ARCHS

    kind = model_config.get("kind", "baseline")
    if method == "castream_attention":
        return kind == "castream"
    if method == "cam":
        return kind != "castream" and model_config.get("arch", "resnet_small") in GAP_FC_ARCHS
    return True


def method_params(config: dict[str, Any], method: str) -> dict[str, Any]:
    """The full parameters of ``method`` (defaults overlaid with the config's)."""
    from cambench.saliency import METHODS

    return METHODS[method].resolve_params(config["methods"].get(method) or {})


def as_json(value: Any) -> str:
    """Canonical JSON: equal configs give equal strings, so params trigger reruns exactly."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
