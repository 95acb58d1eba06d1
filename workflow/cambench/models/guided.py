"""Guided backpropagation as a switchable backward rule of a model's ReLUs.

Guided backpropagation (Springenberg et al. 2015) replaces the backward pass of every
ReLU by ``g_in = g_out · 1[a > 0] · 1[g_out > 0]`` (for ReLU6 also ``· 1[a < 6]``).
The forward pass is unchanged, so one forward graph serves both rules: a
:class:`ReLUGate` puts an identity node after the output of every ``nn.ReLU`` /
``nn.ReLU6`` call whose backward reads the gate's ``guided`` flag *when the backward
runs*. With the flag off the node passes the gradient through (the standard
gradient, differentiable again for ``create_graph=True``); with it on the node keeps
the positive part ``g_out · 1[g_out > 0]``, and the ReLU's own backward then applies
``1[a > 0]`` (``1[0 < a < 6]`` for ReLU6), which gives exactly the guided rule.

The gate is a forward hook, so it acts per *call*: a ReLU module that a model calls
several times (torchvision's ResNet) is gated at every call, and in-place ReLUs
(torchvision's ``inplace=True``) work because the masks are those of the ReLU's own
backward. Only module activations can be seen: ``torch.nn.functional.relu`` calls
inside a ``forward`` cannot be gated, so a model's guided gradient is correct only
when all its ReLUs are modules. Models with other activation modules (GELU, SiLU, …)
are refused with a ValueError, and so are models without any ReLU module.

Typical use::

    with guided_backward(model):            # every backward through model is guided
        grads = torch.autograd.grad(score, x)

    with ReLUGate(model) as gate:           # both rules from one forward graph
        score = model(x)[..., t].sum()
        gate.guided = True
        guided = torch.autograd.grad(score, x, retain_graph=True)[0]
        gate.guided = False
        standard = torch.autograd.grad(score, x, create_graph=True)[0]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

GATED = (nn.ReLU, nn.ReLU6)

# Activation modules whose backward guided backpropagation does not define. ReLU6 is a
# subclass of Hardtanh, so GATED is checked first.
UNSUPPORTED = (
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Softsign,
    nn.LogSigmoid,
    nn.Tanhshrink,
    nn.Threshold,
    nn.GLU,
)


def check_guidable(model: nn.Module) -> list[nn.Module]:
    """The model's ReLU/ReLU6 modules; ValueError if guided backprop is undefined for it.

    Refused: models containing another activation module (GELU, SiLU, LeakyReLU, …)
    and models with no ReLU module at all (their ReLUs, if any, are functional calls
    that cannot be gated). Functional ``F.relu`` calls beside ReLU modules cannot be
    detected.
    """
    gated, others = [], []
    for name, module in model.named_modules():
        if isinstance(module, GATED):
            gated.append(module)
        elif isinstance(module, UNSUPPORTED):
            others.append(f"{name or '<model>'} ({type(module).__name__})")
    if others:
        shown = ", ".join(others[:5]) + (", …" if len(others) > 5 else "")
        raise ValueError(
            f"guided backpropagation needs a network whose activations are all nn.ReLU or "
            f"nn.ReLU6 modules; {type(model).__name__} has {shown}"
        )
    if not gated:
        raise ValueError(
            f"guided backpropagation found no nn.ReLU/nn.ReLU6 module in {type(model).__name__} "
            "(functional relu calls cannot be switched)"
        )
    return gated


class _GateFunction(torch.autograd.Function):
    """Identity forward; backward keeps ``g · 1[g > 0]`` when the gate is guided."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, gate: ReLUGate) -> torch.Tensor:  # type: ignore[override]
        ctx.gate = gate
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        if ctx.gate.guided:
            return F.relu(grad), None
        return grad, None


class ReLUGate:
    """Context manager gating every ReLU/ReLU6 call of ``model`` (see module doc).

    ``guided`` is read at backward time, so one forward graph gives the standard
    gradient (``guided = False``) and the guided one (``guided = True``). The hooks
    are removed on exit; the graph built inside keeps its gates and their flag.
    """

    def __init__(self, model: nn.Module, guided: bool = False) -> None:
        self.model = model
        self.guided = guided
        self._handles: list = []

    def _hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() or not output.requires_grad:
            return output
        return _GateFunction.apply(output, self)

    def __enter__(self) -> ReLUGate:
        modules = check_guidable(self.model)
        self._handles = [m.register_forward_hook(self._hook) for m in modules]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


@contextlib.contextmanager
def guided_backward(model: nn.Module) -> Iterator[ReLUGate]:
    """Every backward through ``model``'s ReLUs inside the block is guided."""
    with ReLUGate(model, guided=True) as gate:
        yield gate


def _target_score(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of each image's target logit ``y_t``."""
    return logits.gather(1, targets.view(-1, 1)).sum()


def input_gradient(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, guided: bool = False
) -> torch.Tensor:
    """``∂y_t/∂x`` (B, 3, H, W) for each image's target ``t``, standard or guided.

    One forward and one backward pass down to the input; the parameters' ``.grad``
    are not touched. In eval mode each image's gradient depends on that image only.
    The standard gradient works for any model; the guided one needs
    :func:`check_guidable` to pass.
    """
    x = images.detach().requires_grad_(True)
    gate = ReLUGate(model, guided=True) if guided else contextlib.nullcontext()
    with gate, torch.enable_grad():
        score = _target_score(model(x), targets)
        (grad,) = torch.autograd.grad(score, x)
    return grad


def standard_and_guided_gradients(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, create_graph: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits, g, ĝ)`` from one forward graph: ``g = ∂y_t/∂x`` and its guided twin.

    ``ĝ`` is detached (a target). With ``create_graph=True`` the standard gradient
    ``g`` is differentiable with respect to the parameters (double backpropagation),
    and ``logits`` keep their graph, so ``F.cross_entropy(logits, t) + λ·d(g, ĝ)`` can
    be backpropagated in one call.
    """
    x = images.detach().requires_grad_(True)
    with ReLUGate(model) as gate, torch.enable_grad():
        logits = model(x)
        score = _target_score(logits, targets)
        gate.guided = True
        (guided,) = torch.autograd.grad(score, x, retain_graph=True)
        gate.guided = False
        (standard,) = torch.autograd.grad(score, x, create_graph=create_graph)
    if not create_graph:
        logits, standard = logits.detach(), standard.detach()
    return logits, standard, guided.detach()
