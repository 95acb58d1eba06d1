"""Opti-CAM (Zhang et al., CVIU 2024): channel weights optimized for the masked logit.

``S(u) = Σ_k softmax(u)_k A^k`` with ``A`` computed once and held fixed; ``u``
(one vector per image) maximizes ``y_c(f(x ⊙ n(up(S(u)))))`` with Adam from ``u = 0``
for a fixed number of iterations (REFERENCES.md). The whole batch is optimized at
once: the loss is the sum over images and Adam's update is elementwise, so each
image's ``u`` follows the trajectory it would follow alone (exactly in exact
arithmetic; in floating point up to the model's own batch-size-dependent rounding,
which Adam would amplify on zero gradients: see :func:`opticam`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cambench.saliency.core import activations, target_scores
from cambench.saliency.registry import register

OBJECTIVES = ("logit", "probability")
NORMALIZATIONS = ("minmax", "max")

# Relative epsilon of the normalization during optimization (see ``normalized_mask``).
_REL_EPS = 1e-7


def combine(u: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """``S(u) = Σ_k softmax(u)_k A^k`` for ``u`` (B, K) and ``A`` (B, K, h, w)."""
    return torch.einsum("bk,bkhw->bhw", torch.softmax(u, dim=1), acts)


def normalized_mask(
    saliency: torch.Tensor, size: tuple[int, int], normalization: str = "minmax"
) -> torch.Tensor:
    """The differentiable mask ``n(up(S))`` (B, H, W) used during optimization.

    ``minmax``: ``(S − min S) / (max S − min S + ε)``; ``max``: ``S / (max S + ε)``
    (meant for non-negative maps, e.g. features after a ReLU), upsampling bilinear with
    ``align_corners=False``. ``ε = 1e-7 · max|S|`` (a constant, not differentiated):
    it keeps the value and gradient finite at a constant map, where plain min-max
    divides 0 by 0, and changes a map by at most one float32 rounding step while
    keeping ``n`` invariant to the scale of ``A``.
    """
    up = F.interpolate(saliency.unsqueeze(1), size=size, mode="bilinear", align_corners=False)
    flat = up.flatten(1)
    high = flat.amax(1, keepdim=True)
    eps = _REL_EPS * flat.detach().abs().amax(1, keepdim=True) + torch.finfo(flat.dtype).tiny
    if normalization == "minmax":
        low = flat.amin(1, keepdim=True)
        flat = (flat - low) / (high - low + eps)
    else:
        flat = flat / (high + eps)
    return flat.view(up.shape[0], *size)


def masked_objective(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    objective: str = "logit",
) -> torch.Tensor:
    """Per-image objective (B,) of the masked images ``x ⊙ mask``."""
    logits = model(images * mask.unsqueeze(1))
    if objective == "probability":
        return target_scores(torch.softmax(logits, dim=1), targets)
    return target_scores(logits, targets)


@register(
    "opticam",
    defaults={"iterations": 100, "lr": 0.1, "objective": "logit", "normalization": "minmax"},
)
def opticam(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: nn.Module,
    iterations: int,
    lr: float,
    objective: str,
    normalization: str,
) -> torch.Tensor:
    """Opti-CAM (Zhang et al. 2024): ``α = softmax(u*)``, ``u*`` maximizing the masked logit.

    Adam (learning rate ``lr``) from ``u = 0`` for exactly ``iterations`` steps, no
    early stopping; the returned map is ``S(u)`` after the last step, at the target
    layer's resolution. ``objective``: ``logit`` (the paper's choice) or
    ``probability`` (the softmax probability of the class); ``normalization`` of the
    mask: ``minmax`` (the paper's choice) or ``max`` (``S / max S``). Whatever the
    normalization used for the mask, the saved map is min-max normalized like every
    map (the output contract). Each iteration costs one forward and one backward
    through the whole model (to the input mask; no parameter gradients).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}"
        )
    if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 0:
        raise ValueError(f"iterations must be a non-negative integer, got {iterations!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    acts, _ = activations(model, images, layer)
    size = tuple(images.shape[-2:])
    u = torch.zeros(acts.shape[:2], device=acts.device, dtype=acts.dtype, requires_grad=True)
    # A channel that is zero everywhere only rescales S, and n is scale-invariant: its
    # gradient is 0 in exact arithmetic. Adam divides each component by its own
    # magnitude and would turn the float noise left there into steps of size lr, so
    # it is zeroed (this keeps every image's result independent of its batch).
    live = acts.flatten(2).ne(0).any(2).to(acts.dtype)
    optimizer = torch.optim.Adam([u], lr=float(lr))
    with torch.enable_grad():
        for _ in range(int(iterations)):
            mask = normalized_mask(combine(u, acts), size, normalization)
            loss = -masked_objective(model, images, targets, mask, objective).sum()
            (grad,) = torch.autograd.grad(loss, u)
            u.grad = grad * live
            optimizer.step()
    return combine(u.detach(), acts)
