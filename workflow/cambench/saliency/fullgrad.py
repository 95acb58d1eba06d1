"""FullGrad: the input gradient and the gradients of every bias term, as maps.

FullGrad reads no target layer: it needs the model's bias terms, which it reads from
``nn.Conv2d`` and ``nn.BatchNorm2d`` layers (exactly those types, as pytorch-grad-cam).
A model without any is refused (:func:`bias_layers`), and the workflow skips it
(:func:`config_has_bias_layers`, used by ``ModelSpec.applies``).
"""

from __future__ import annotations

import functools
import json
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cambench.models import build_on_meta
from cambench.saliency.core import check_gradients, check_logits, target_scores
from cambench.saliency.registry import register

# pytorch-grad-cam's scale_cam_image: (v - min) / (max - min + 1e-7), per channel.
_EPS = 1e-7


def bias_layers(model: nn.Module) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """``(name, layer, b)`` for each layer whose bias FullGrad reads, in module order.

    ``b`` is a convolution's ``bias``, or a batch norm's bias in eval mode,
    ``β − μ γ / sqrt(σ² + ε)`` (its running statistics folded in). Only layers of
    type ``nn.Conv2d`` with a bias and ``nn.BatchNorm2d`` with an affine bias and
    running statistics count (subclasses do not: pytorch-grad-cam tests the exact
    type). ValueError when there are none.
    """
    found = []
    for name, m in model.named_modules():
        if type(m) is nn.Conv2d and m.bias is not None:
            found.append((name, m, m.bias.detach()))
        elif type(m) is nn.BatchNorm2d and m.bias is not None and m.running_mean is not None:
            scale = m.weight.detach() / torch.sqrt(m.running_var + m.eps)
            found.append((name, m, m.bias.detach() - m.running_mean * scale))
    if not found:
        raise ValueError(
            f"'fullgrad' needs the model's bias terms and reads them from nn.Conv2d and "
            f"nn.BatchNorm2d layers; {type(model).__name__} has no such layer with a bias"
        )
    return found


def config_has_bias_layers(model_config: dict[str, Any]) -> bool:
    """Whether the model a config entry builds has a layer FullGrad reads
    (:func:`bias_layers`), decided without weights or compute: the model is built on
    PyTorch's meta device. A model that cannot be built there counts as having one, so
    the saliency job runs and a wrong guess is a ValueError, never a silent skip."""
    return _config_has_bias_layers(json.dumps(model_config, sort_keys=True))


@functools.lru_cache(maxsize=256)
def _config_has_bias_layers(entry: str) -> bool:
    model = build_on_meta(json.loads(entry))
    if model is None:  # the job decides what cannot be built here
        return True
    try:
        bias_layers(model)
    except ValueError:
        return False
    return True


def _scaled_sum(values: torch.Tensor) -> torch.Tensor:
    """``Σ_k (V_k − min V_k) / (max V_k − min V_k + 1e-7)`` over dim 1, (B, h, w): each
    channel of each image min-max scaled on its own, as pytorch-grad-cam."""
    flat = values.flatten(2)
    low = flat.amin(2, keepdim=True)
    span = flat.amax(2, keepdim=True) - low
    return ((flat - low) / (span + _EPS)).sum(1).view(values.shape[0], *values.shape[2:])


@register("fullgrad", uses_layer=False)
def fullgrad(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: nn.Module | None
) -> torch.Tensor:
    """FullGrad (Srinivas & Fleuret 2019): input-gradient and bias-gradient maps, summed.

    ``S = Σ_c ψ(|x_c ⊙ ∂y_c/∂x_c|) + Σ_l Σ_k ψ(up(|b_{l,k} ∂y_c/∂z_{l,k}|))`` where
    ``z_l`` is the output of bias layer ``l``, ``b_{l,k}`` its bias of channel ``k``
    (:func:`bias_layers`), ``up`` bilinear upsampling to the input size and ``ψ``
    min-max scaling of one channel of one image, ``(v − min) / (max − min + 1e-7)``.
    The paper's completeness ``y_c = ∇_x y_c · x + Σ ∇_b y_c · b`` holds when every
    bias is counted; like pytorch-grad-cam's ``FullGrad``, only ``nn.Conv2d`` and
    ``nn.BatchNorm2d`` biases are read (a linear classifier's or a transformer's are
    not), the scaling is per channel (the paper's implementation scales each layer's
    map as a whole) and ``x`` is the image as the model receives it (here in
    [0, 1], the normalization inside the model). Scaling is affine, so each layer's
    channels are scaled and summed at the layer's resolution and upsampled once.

    Srinivas & Fleuret, "Full-Gradient Representation for Neural Network
    Visualization", NeurIPS 2019, https://arxiv.org/abs/1905.00780.

    One forward and one full backward pass; no target layer (``layer`` is ignored).
    A model whose bias terms it cannot read is a ValueError; a bias layer called more
    than once per forward too (its gradient would mix the calls).

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> model, images, targets = example_inputs()  # a seeded SmallResNet, 2 images
    >>> maps = explain("fullgrad", model, images, targets)
    >>> maps.shape, bool(maps.amin() >= 0), bool(maps.amax() <= 1)
    (torch.Size([2, 32, 32]), True, True)
    """
    found = bias_layers(model)
    outputs: dict[nn.Module, list[torch.Tensor]] = {m: [] for _, m, _ in found}

    def keep(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        outputs[module].append(output)
        return output.clone()  # later in-place operations must not touch ``output``

    handles = [m.register_forward_hook(keep) for _, m, _ in found]
    try:
        with torch.enable_grad():
            x = images.detach().requires_grad_(True)
            logits = model(x)
            check_logits(logits, targets)
            called = [(name, m, b) for name, m, b in found if outputs[m]]
            for name, m, _ in called:
                if len(outputs[m]) > 1:
                    raise ValueError(
                        f"'fullgrad': bias layer {name!r} is called {len(outputs[m])} times "
                        "per forward; its bias gradient would mix the calls"
                    )
            grads = torch.autograd.grad(
                target_scores(logits, targets).sum(),
                [x, *(outputs[m][0] for _, m, _ in called)],
                allow_unused=True,
            )
    finally:
        for h in handles:
            h.remove()
    check_gradients(grads[0])
    size = tuple(images.shape[-2:])
    saliency = _scaled_sum((x.detach() * grads[0]).abs())
    for (_, _, bias), grad in zip(called, grads[1:], strict=True):
        if grad is None:  # a layer the target's logit does not depend on
            continue
        check_gradients(grad)
        part = _scaled_sum((grad * bias.view(1, -1, 1, 1)).abs())
        if tuple(part.shape[-2:]) != size:
            part = F.interpolate(
                part.unsqueeze(1), size=size, mode="bilinear", align_corners=False
            ).squeeze(1)
        saliency = saliency + part
    return saliency
