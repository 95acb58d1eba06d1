"""A faster copy of a model for the many no-grad forward passes of metrics and Score-CAM.

Insertion/deletion, Average Drop/Increase and Score-CAM spend almost all their time in
plain forward passes of perturbed images. Two standard inference rewrites make those
passes about twice as fast on CPU (measured: ``benchmarks/results/metrics-cpu.txt``):

- batch norm folded into the preceding convolution (``torch.fx`` conv-BN fusion, eval
  statistics), where the model can be traced symbolically and has no forward hooks;
- ``channels_last`` memory format on CPU, where oneDNN's convolutions are faster,
  except for convolutions with 256+ output channels on maps of 3×3 or fewer positions
  (1.2–1.6× slower there), which run channels-first (:class:`ShapeRuledConv2d`).

Both change a logit only by float32 rounding (about 1e-5). The copy shares nothing
with the original: the original's mode, hooks and flags are untouched, and a later
change of the original's weights does not reach a copy made before it.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


def has_forward_hooks(model: nn.Module) -> bool:
    """Whether a forward (pre-)hook, global or on a submodule, would see ``model``'s calls."""
    from torch.nn.modules import module as torch_module

    if getattr(torch_module, "_global_forward_hooks", None) or getattr(
        torch_module, "_global_forward_pre_hooks", None
    ):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _fold_batch_norm(model: nn.Module) -> nn.Module:
    """``model`` with conv → BN pairs folded, or ``model`` itself where fx cannot trace it
    or where hooks are registered (a traced graph would drop them)."""
    from torch.fx.experimental.optimization import fuse

    if has_forward_hooks(model):
        return model

    try:
        return fuse(model, inplace=True)
    except Exception as error:  # noqa: BLE001 - any tracing failure means "keep the model"
        log.debug("batch-norm folding skipped for %s: %s", type(model).__name__, error)
        return model


# Where a channels-last copy's convolution runs channels-first instead: a kernel larger
# than 1×1, at least this many output channels, an output map of at most this many
# positions. Measured with oneDNN on the benchmark CPU (batch 64 and 256, 1 thread),
# channels-last / channels-first time of a 3×3 convolution with 256 or 512 channels:
# 1.56–1.64 at 2×2, 1.19–1.26 at 3×3, 0.92–1.24 at 1×1, 1.03–1.07 at 4×4, below 1 from
# 5×5 on; with 64 or 128 channels 0.66–1.23 at any of these sizes. 1×1 kernels: 0.88–1.15
# at 2×2 and 3×3 maps, so they stay channels-last. The whole copy of a ResNet-18 at 64 px
# takes 0.87–0.89× the time; the default model has no such convolution.
CHANNELS_FIRST_MIN_CHANNELS = 256
CHANNELS_FIRST_MAX_POSITIONS = 9


def _output_positions(conv: nn.Conv2d, size: torch.Size) -> int:
    """Positions ``h·w`` of ``conv``'s output map for an input map of ``size`` (h, w)."""
    if conv.padding == "same":
        return size[0] * size[1]
    pad = (0, 0) if conv.padding == "valid" else conv.padding
    out = [
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, p, d, k, s in zip(
            size, pad, conv.dilation, conv.kernel_size, conv.stride, strict=True
        )
    ]
    return out[0] * out[1]


class ShapeRuledConv2d(nn.Module):
    """A channels-last ``Conv2d`` (kernel above 1×1, 256+ output channels) that runs
    channels-first where its output map is tiny (:data:`CHANNELS_FIRST_MAX_POSITIONS`),
    where oneDNN's channels-last kernels are slower. Decided per call from the input's
    size, so the memory format (and rounding) depends on the shape only; the
    channels-first weight is made on first use."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.weight_cf: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if _output_positions(conv, x.shape[-2:]) > CHANNELS_FIRST_MAX_POSITIONS:
            return conv(x)
        if self.weight_cf is None:
            self.weight_cf = conv.weight.contiguous()
        return conv._conv_forward(x.contiguous(), self.weight_cf, conv.bias)


def _rule_convolutions(model: nn.Module) -> None:
    """Wrap, in place, the ``Conv2d`` modules of ``model`` that the rule can apply to
    (:class:`ShapeRuledConv2d`); others, and models with none, stay as they are."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if (
                type(child) is nn.Conv2d
                and child.groups == 1
                and child.kernel_size != (1, 1)
                and child.out_channels >= CHANNELS_FIRST_MIN_CHANNELS
            ):
                setattr(parent, name, ShapeRuledConv2d(child))


class InferenceCopy(nn.Module):
    """What :func:`inference_copy` returns: the folded copy, fed its input in
    ``channels_last`` layout when its weights are (CPU). A type of its own, so that a
    caller can tell a copy from a model without an attribute riding on the module."""

    def __init__(self, model: nn.Module, channels_last: bool) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)


def inference_copy(model: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """An eval-mode copy of ``model`` for no-grad forwards, folded and (on CPU) channels-last
    (channels-first on tiny, wide maps: :class:`ShapeRuledConv2d`).

    ``device`` is where the copy's inputs live (default: the model's parameters' device);
    it picks the memory format. Use the copy under ``torch.no_grad()`` only: its weights
    do not require grad. Given a copy, returns it unchanged (no second copy).
    """
    if isinstance(model, InferenceCopy):
        return model  # already one: a caller may make it once for many metric calls
    fast = copy.deepcopy(model).eval().requires_grad_(False)
    fast = _fold_batch_norm(fast)
    if device is None:
        first = next(fast.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    channels_last = torch.device(device).type == "cpu"
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
        if not has_forward_hooks(fast):  # a hook on a wrapped conv would miss calls
            _rule_convolutions(fast)
    return InferenceCopy(
        fast, channels_last
    ).eval()  # fx's new GraphModule and the wrapper start in train mode
