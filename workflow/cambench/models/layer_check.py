"""The evaluation layer checked when the config is read, before any job: the model is
built from its config on PyTorch's meta device (no weights, no memory, no compute),
the layer path is looked up, and one meta forward at the dataset's image size gives
the layer's output shape. A misspelt ``layer:`` then fails in a second, not after
training; a layer smaller than 2×2 (a torchvision ResNet's ``layer4`` on 32-pixel
images) fails naming the key instead of producing constant maps.

A model that cannot be built this way (its weights file is read at build time, an
operation without a meta kernel) is checked by the saliency job instead, with the
same errors.
"""

from __future__ import annotations

from typing import Any

import torch

from cambench.models import build_on_meta
from cambench.models.layers import check_layer_size, map_shape, resolve_layer


def check_target_layer(
    name: str, model_config: dict[str, Any], num_classes: int, image_size: int
) -> str | None:
    """The target layer's dotted path for the model ``name`` (its ``layer:`` or its
    default), after checking that it exists and outputs at least 2×2 positions at
    ``image_size``; ``None`` when the model cannot be built on the meta device. A
    ValueError names ``models.<name>.layer``."""
    where = f"config key 'models.{name}.layer'"
    model = build_on_meta(model_config, num_classes)
    if model is None:  # the saliency job checks what cannot be built here
        return None
    layer = model_config.get("layer") or None
    example = torch.empty(1, 3, image_size, image_size, device="meta")
    if layer is not None:
        try:
            layer_name, module = resolve_layer(model, layer)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    else:
        try:
            layer_name, module = resolve_layer(model, None, example)
        except Exception:  # noqa: BLE001  (a probe that needs real values: the job's)
            return None
    shapes: list[tuple[int, int] | None] = []
    handle = module.register_forward_hook(lambda m, i, o: shapes.append(map_shape(m, o)))
    try:
        with torch.no_grad():
            model(example)
    except Exception:  # noqa: BLE001
        return layer_name
    finally:
        handle.remove()
    if shapes and shapes[0] is not None:
        h, w = shapes[0]
        what = f"{where} ({layer_name!r} of {model_config.get('arch', 'the model')})"
        check_layer_size(h, w, f"{what} at dataset.image_size {image_size}")
    return layer_name
