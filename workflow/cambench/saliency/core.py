"""Shared machinery: leaving the model as found, capturing a layer, normalizing maps."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

# The layouts live with the layer lookup (which probes them); imported from here too.
from cambench.models.layers import (  # noqa: F401
    ChannelsLast,
    Layout,
    TokenLayout,
    layer_layout,
)
from cambench.models.small_resnet import SmallResNet


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[None]:
    """Run in eval mode with no parameter requiring grad; restore both afterwards.

    With parameters frozen and images not requiring grad, autograd records nothing
    until a method marks a tensor (e.g. the target layer's output) as requiring grad,
    so backward passes cover only the layers after it.

    Only what differs is set (``nn.Module.__setattr__`` is slow): a model already in
    eval mode with frozen parameters costs two passes over its modules and parameters
    (a third of the time of setting every flag, 0.16 ms instead of 0.49 ms per call on
    a ResNet-18, measured).
    """
    modules = list(model.modules())
    modes = [m.training for m in modules]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    if any(modes):
        model.eval()
    for p, flag in zip(params, flags, strict=True):
        if flag:
            p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            if p.requires_grad != flag:
                p.requires_grad_(flag)
        for m, mode in zip(modules, modes, strict=True):
            if m.training != mode:
                m.training = mode


def all_finite(values: torch.Tensor) -> bool:
    """Whether no value is NaN or ±inf; one sum for the common case (a NaN or an inf
    makes the sum non-finite), the elementwise test only when the sum overflows."""
    return bool(torch.isfinite(values.sum())) or bool(torch.isfinite(values).all())


def check_targets(targets: torch.Tensor, num_classes: int) -> None:
    """ValueError naming the first target outside ``[0, num_classes)``."""
    bad = targets[(targets < 0) | (targets >= num_classes)]
    if bad.numel():
        raise ValueError(
            f"target {int(bad[0])} is outside [0, {num_classes}): the model has "
            f"{num_classes} classes"
        )


def check_logits(logits: torch.Tensor, targets: torch.Tensor | None = None) -> None:
    """ValueError unless ``logits`` are finite (B, num_classes) and ``targets`` index them.

    Called after each method's first forward: the number of classes is the logits'
    width, known only then. A model returning NaN would otherwise give NaN scores that
    the min-max normalization turns into all-zero maps that look valid.
    """
    if logits.ndim != 2:
        raise ValueError(
            f"the model must return (B, num_classes) logits, got shape {tuple(logits.shape)}"
        )
    if targets is not None:
        check_targets(targets, logits.shape[1])
    if not all_finite(logits):
        raise ValueError("non-finite logits (NaN or inf) from the model: no saliency map")


def check_gradients(grads: torch.Tensor) -> None:
    """ValueError if a gradient is NaN or inf (a map built from it would be meaningless)."""
    if not all_finite(grads):
        raise ValueError("non-finite gradients (NaN or inf) of the target logits: no saliency map")


def target_scores(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Logit ``y_c`` of each image's target class, shape (B,); targets are range-checked."""
    check_targets(targets, logits.shape[1])
    return logits.gather(1, targets.view(-1, 1)).squeeze(1)


class LayerCapture:
    """Forward hook on ``layer`` that keeps its output ``A`` as a tensor of its own.

    ``A`` is always (B, C, h, w): a transformer layer's tokens (B, [1 +] h·w, C)
    (:class:`TokenLayout`) and a channels-last output (B, h, w, C)
    (:class:`ChannelsLast`) are reshaped (:func:`layer_layout`); with ``grad=True``
    the model continues with ``A`` turned back into the layer's own layout, so
    gradients reach ``A``. ``rest`` keeps what the map leaves out (a ViT's class
    token), for methods that hand the layer's output back to the model.

    The stored activation never shares memory with a tensor the model can still
    modify: torchvision's ResNet blocks, for instance, add the shortcut to ``bn2``'s
    output in place and apply an in-place ReLU, so a plain ``output.detach()`` of
    ``bn2`` would end up holding the block's output instead.

    - ``grad=False``: a copy of the output is kept (the model may modify the output
      itself later; one copy of the layer's output costs well under 1 % of a forward).
    - ``grad=True``: the kept activation is a leaf that requires grad, and the model
      continues with a clone of it, so ``torch.autograd.grad(score, capture.activation)``
      gives ``∂y_c/∂A`` and the model's later in-place operations touch only the clone.
      The leaf is a copy only where the output shares memory with one of the layer's
      inputs (an in-place module, a view), which the model may still hold.
    """

    def __init__(self, layer: nn.Module, grad: bool) -> None:
        self.grad = grad
        self.activation: torch.Tensor | None = None
        self.layout: Layout = None
        self.rest: torch.Tensor | None = None
        self._handle = layer.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        self.layout = layer_layout(module, output)
        if self.layout is not None:
            self.rest = self.layout.rest(output)
            if not self.grad:
                self.activation = self.layout.to_map(output.detach()).clone()
                return None
            self.activation = self.layout.to_map(output.detach()).clone().requires_grad_(True)
            return self.layout.to_output(self.activation, output)
        if not self.grad:
            self.activation = output.detach().clone()
            return None
        leaf = output.detach()
        if _shares_memory(output, inputs):
            leaf = leaf.clone()
        self.activation = leaf.requires_grad_(True)
        return self.activation.clone()

    def remove(self) -> None:
        self._handle.remove()

    def __enter__(self) -> LayerCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _shares_memory(output: torch.Tensor, inputs: tuple) -> bool:
    """Whether ``output`` is stored in the memory of one of ``inputs`` (in-place, view)."""
    storage = output.untyped_storage().data_ptr()
    return any(
        isinstance(x, torch.Tensor) and x.untyped_storage().data_ptr() == storage for x in inputs
    )


def _targets_and_layer(
    targets: torch.Tensor | nn.Module | None, layer: nn.Module | torch.Tensor | None
) -> tuple[torch.Tensor | None, nn.Module]:
    """``(targets, layer)`` of a helper call in either argument order: the helpers take
    ``(model, images, targets, layer)`` like a method; ``activations``' former order
    ``(model, images, layer, targets)`` still works (a module cannot be targets)."""
    if isinstance(targets, nn.Module) and not isinstance(layer, nn.Module):
        targets, layer = layer, targets
    if not isinstance(layer, nn.Module):
        raise TypeError(
            f"layer must be an nn.Module (the target layer), got {type(layer).__name__}"
        )
    return targets, layer


def activations_and_gradients(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: nn.Module
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward and a backward from ``y_c`` down to ``layer`` only.

    Returns ``(A, G, logits)`` with ``G = ∂y_c/∂A``; images in a batch are independent
    because each ``y_c`` depends on its own image only (eval-mode batch norm). ``A`` is
    the capture's own leaf (:class:`LayerCapture`) and ``G`` a new tensor from
    ``torch.autograd.grad``: the model holds neither. Arguments in a method's order;
    ``(model, images, layer, targets)`` works too.
    """
    targets, layer = _targets_and_layer(targets, layer)
    if targets is None:
        raise TypeError("activations_and_gradients needs the targets (B,)")
    with LayerCapture(layer, grad=True) as capture, torch.enable_grad():
        logits = model(images)
        if capture.activation is None:
            raise ValueError("the target layer was not called during the forward pass")
        check_logits(logits, targets)
        scores = target_scores(logits, targets)
        (grads,) = torch.autograd.grad(scores.sum(), capture.activation, allow_unused=True)
    if grads is None:
        raise ValueError(
            "the logits do not depend on the target layer's output; choose another layer"
        )
    check_gradients(grads)
    return capture.activation.detach(), grads, logits.detach()


@torch.no_grad()
def activations(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor | None = None,
    layer: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, logits)`` from one forward pass without autograd.

    Arguments in a method's order, as :func:`activations_and_gradients`: ``targets``
    may be ``None`` (``activations(model, images, layer=layer)``). The former order
    ``(model, images, layer[, targets])`` still works. The logits are checked
    (:func:`check_logits`): finite always, and against ``targets`` where given.
    """
    targets, layer = _targets_and_layer(targets, layer)
    with LayerCapture(layer, grad=False) as capture:
        logits = model(images)
    if capture.activation is None:
        raise ValueError("the target layer was not called during the forward pass")
    check_logits(logits, targets)
    return capture.activation, logits


def example_inputs(batch: int = 2) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """``(model, images, targets)`` for the docstring examples: a seeded SmallResNet
    (10 classes, width 8, one block per stage, eval mode) and ``batch`` seeded random
    32 × 32 images with targets ``0, 1, …`` (mod 10). Leaves the global RNG as found."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = SmallResNet(num_classes=10, width=8, blocks=(1, 1, 1, 1)).eval()
    images = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return model, images, torch.arange(batch) % 10


def weighted_sum(weights: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """The CAM combination ``S = Σ_k α_k A^k`` (B, h, w) for weights ``α`` (B, K) and
    activations ``A`` (B, K, h, w), in the activations' dtype."""
    return torch.einsum("bk,bkhw->bhw", weights.to(acts.dtype), acts)


def minmax_normalize(maps: torch.Tensor) -> torch.Tensor:
    """Per-image ``(S - min) / (max - min)``; a constant map becomes all zeros."""
    flat = maps.flatten(1)
    low = flat.min(1, keepdim=True).values
    span = flat.max(1, keepdim=True).values - low
    out = torch.where(
        span > 0,
        (flat - low) / span.clamp_min(torch.finfo(flat.dtype).tiny),
        torch.zeros_like(flat),
    )
    return out.view_as(maps)


def finalize_maps(raw: torch.Tensor, size: tuple[int, int], relu: bool = True) -> torch.Tensor:
    """The output contract: ``n(up(ReLU(S)))`` as float32 (B, H, W) in [0, 1]."""
    if raw.ndim != 3:
        raise ValueError(f"a method must return (B, h, w) maps, got shape {tuple(raw.shape)}")
    maps = raw.detach().float()
    if relu:
        maps = maps.clamp_min(0)
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(
            maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False
        ).squeeze(1)
    return minmax_normalize(maps).clamp_(0.0, 1.0)
