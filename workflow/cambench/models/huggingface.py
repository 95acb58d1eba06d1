"""HuggingFace ``transformers`` image classifiers as cambench models (``arch: hf:<...>``).

``arch: "hf:<Class or model type>"`` names a transformers image-classification model:
a class (``hf:ViTForImageClassification``) or a model type (``hf:vit``, the class
``AutoModelForImageClassification`` maps it to). transformers is an optional extra
(``pip install 'cambench[hf]'``). Nothing is ever downloaded:

- ``weights:`` is a directory written by ``save_pretrained`` (its ``config.json`` and
  ``model.safetensors``) or a ``.safetensors`` file (the architecture then comes from
  a ``config.json`` beside it, else from the class's default config and
  ``arch_kwargs``). The weights go through transformers' own loader, which renames
  the key names of older transformers versions; any key missing, unexpected or of
  another shape is an error (an evaluation-only model never keeps a random layer).
- ``arch_kwargs:`` overrides fields of the model's config (``hidden_size``,
  ``image_size``, ...); ``num_classes`` sets ``num_labels``.
- Without weights the model is randomly initialized (transformers' init).

A checkpoint written from such a model records the complete transformers config
(``hf_config`` in its model config), so it is rebuilt without the weights directory.

The logits are the output's ``.logits``. Default target layers (as pytorch-grad-cam's
examples for these families): ViT and DeiT, the last encoder block's first LayerNorm
(``layernorm_before``; its tokens after the class/distillation tokens form the map);
ConvNeXt and ResNet, the last stage (``<model>.encoder.stages.<last>``); Swin, the
final LayerNorm over the last stage's tokens (``swin.layernorm``: the stage modules
return tuples, not a tensor). Other families get cambench's probe of the last layer
whose map reaches the logits.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

PREFIX = "hf:"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# model type -> how its default target layer is found (see the module doc)
_TOKEN_FAMILIES = ("vit", "deit")
_STAGE_FAMILIES = ("convnext", "resnet")


def transformers_module() -> ModuleType:
    """The transformers package; ValueError saying how to install it otherwise."""
    try:
        import transformers
    except ImportError:
        raise ValueError(
            "hf: archs need HuggingFace transformers: `pip install 'cambench[hf]'` (or "
            "`pip install transformers safetensors`)"
        ) from None
    return transformers


def image_classification_types() -> dict[str, str]:
    """transformers' model types with an image-classification class: type -> class name
    (the first where transformers lists several, e.g. DeiT's without the teacher)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    )

    return {
        key: value if isinstance(value, str) else value[0]
        for key, value in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.items()
    }


def model_class(name: str) -> type:
    """The transformers class that ``hf:<name>`` names (a class or a model type)."""
    transformers = transformers_module()
    types = image_classification_types()
    class_name = types.get(name, name)
    cls = getattr(transformers, class_name, None) if class_name[:1].isupper() else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise ValueError(
            f"unknown HuggingFace image classifier {name!r}: give a transformers class "
            f"(e.g. ViTForImageClassification) or a model type ({', '.join(sorted(types))})"
        )
    return cls


def weights_path(weights: str | Path) -> Path:
    """The safetensors file ``weights`` names: the file itself, or a ``save_pretrained``
    directory's ``model.safetensors``; ValueError naming what is missing."""
    path = Path(weights)
    if path.is_dir():
        file = path / WEIGHTS_FILE
        if not file.is_file():
            found = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
            raise ValueError(
                f"weights directory {path} has no {WEIGHTS_FILE} (it holds {found}); save the "
                "model with save_pretrained (safetensors, one shard)"
            )
        return file
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(
                f"weights {path}: an hf: model loads a save_pretrained directory or a "
                ".safetensors file"
            )
        return path
    raise ValueError(
        f"weights {path} do not exist (a save_pretrained directory or a .safetensors file)"
    )


def _config_dir(weights: str | None) -> Path | None:
    """The directory whose ``config.json`` describes ``weights`` (None: there is none)."""
    if not weights:
        return None
    path = Path(weights)
    folder = path if path.is_dir() else path.parent
    return folder if (folder / CONFIG_FILE).is_file() else None


def hf_config(model_config: dict[str, Any], num_classes: int) -> Any:
    """The transformers config of a cambench model config: the recorded ``hf_config``
    (a checkpoint's), else the weights' ``config.json``, else the class's default;
    then ``arch_kwargs`` and ``num_labels = num_classes`` applied."""
    cls = model_class(model_config["arch"].removeprefix(PREFIX))
    config_class = cls.config_class
    stored = model_config.get("hf_config")
    folder = _config_dir(model_config.get("weights"))
    if stored:
        config = config_class.from_dict(dict(stored))
    elif folder is not None:
        config = config_class.from_pretrained(str(folder), local_files_only=True)
    else:
        config = config_class()
    if config.model_type != config_class.model_type:
        raise ValueError(
            f"{folder / CONFIG_FILE if folder else 'the config'} is a {config.model_type!r} "
            f"model, not {config_class.model_type!r} ({model_config['arch']})"
        )
    for key, value in (model_config.get("arch_kwargs") or {}).items():
        if not hasattr(config, key):
            raise ValueError(f"arch_kwargs: {type(config).__name__} has no field {key!r}")
        setattr(config, key, value)
    if config.num_labels != num_classes:
        config.num_labels = int(num_classes)
    return config


def build_hf_net(model_config: dict[str, Any], num_classes: int, load_weights: bool) -> nn.Module:
    """The transformers model of ``model_config``, its ``weights`` loaded when
    ``load_weights`` (every key must fit; see the module doc), in float32."""
    cls = model_class(model_config["arch"].removeprefix(PREFIX))
    config = hf_config(model_config, num_classes)
    weights = model_config.get("weights")
    if not (weights and load_weights):
        return cls(config).float()
    from safetensors.torch import load_file

    path = weights_path(weights)
    state = load_file(str(path))
    net, info = cls.from_pretrained(
        None,
        config=config,
        state_dict=state,
        output_loading_info=True,
        ignore_mismatched_sizes=True,
        dtype=torch.float32,
    )
    problems = []
    mismatched = sorted(info.get("mismatched_keys") or [])
    if mismatched:
        shapes = [f"{k} {tuple(a)} in the file, {tuple(b)} in the model" for k, a, b in mismatched]
        hint = (
            " (set the model's num_classes to the weights' classes)"
            if any("classifier" in k for k, _, _ in mismatched)
            else ""
        )
        problems.append("shape mismatch: " + ", ".join(shapes[:5]) + hint)
    for label in ("missing_keys", "unexpected_keys"):
        keys = sorted(info.get(label) or [])
        if keys:
            more = ", …" if len(keys) > 5 else ""
            problems.append(f"{label.replace('_keys', '')}: " + ", ".join(keys[:5]) + more)
    if problems:
        raise ValueError(f"weights {path} do not fit {cls.__name__}: " + "; ".join(problems))
    return net.float()


def config_record(net: nn.Module) -> dict[str, Any]:
    """The complete transformers config of ``net`` as JSON values (``hf_config`` of a
    checkpoint), from which :func:`hf_config` rebuilds the same architecture."""
    return json.loads(net.config.to_json_string(use_diff=False))


def default_layer(net: nn.Module) -> str | None:
    """The default target layer of a transformers model of a known family (module
    doc), ``None`` for the others."""
    config = getattr(net, "config", None)
    family = getattr(config, "model_type", None)
    base = getattr(net, "base_model_prefix", "")
    names = [name for name, _ in net.named_modules()]
    if family in _TOKEN_FAMILIES:
        norms = [n for n in names if n.startswith(base + ".") and n.endswith(".layernorm_before")]
        return norms[-1] if norms else None
    if family in _STAGE_FAMILIES:
        stages = net.get_submodule(f"{base}.encoder.stages")
        return f"{base}.encoder.stages.{len(stages) - 1}"
    if family == "swin" and f"{base}.layernorm" in names:
        return f"{base}.layernorm"
    return None
