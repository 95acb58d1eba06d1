"""Opti-CAM: channel weights optimized so that the masked image keeps the class score.

Zhang, Torres, Sicre, Avrithis, Ayache, "Opti-CAM: Optimizing saliency maps for
interpretability", Computer Vision and Image Understanding, 2024
(https://arxiv.org/abs/2301.07002). With ``A^k`` the ``K`` feature maps of the target
layer for the clean image ``x`` (computed once and held fixed), ``f`` the model, ``y_c``
its logit (or probability) of class ``c``, ``up`` bilinear upsampling to the image
size and ``n`` a normalization to [0, 1] (min-max)::

    S(u) = Σ_k softmax(u)_k A^k              u ∈ R^K, one vector per image
    u*   = argmax_u  y_c( f( x ⊙ n(up(S(u))) ) )

optimized with Adam from ``u = 0`` (uniform weights). The map is ``S(u*)`` at the
target layer's resolution. The released code (hanwei0912/OptiCAM, ``Basic_OptCAM``)
combines ``ReLU(A)``; so does cambench by default (``activation_relu: true``; on the
usual post-ReLU target layers ``ReLU(A) = A`` and the option changes nothing).

Settings: cambench's default is ``lr 0.1``, ``100`` iterations, the logit objective
and the min-max mask, no early stopping. The released demo (``demo.sh`` running
``generate_opticam.py``) uses ``lr 0.1``, ``50`` iterations, the logit of the
predicted class, min-max, and early stopping: ``{iterations: 50, early_stop: true}``
with ``eval.target: predicted``. The released class ``Basic_OptCAM`` defaults to
``lr 0.01``, ``100`` iterations: ``{lr: 0.01, early_stop: true}``. The released
losses, ``Σ_images (y_c(x) − y_c(x ⊙ mask))`` (demo) and ``Σ_images |y_c(x) −
y_c(x ⊙ mask)|`` (class default), have the gradient of cambench's
``−Σ_images y_c(x ⊙ mask)`` (the second while every masked logit stays below the
clean one), and early stopping compares their values, which differ from cambench's
by the constant ``Σ_images y_c(x)``: the same decisions.

The whole batch is optimized at once: the loss is the sum over images and Adam's
update is elementwise, so each image's ``u`` follows the trajectory it would follow
alone (exactly in exact arithmetic; in floating point up to the model's own
batch-size-dependent rounding, which Adam would amplify on zero gradients: see
:func:`opticam`). Early stopping is the exception: it decides for the whole batch.

>>> import torch
>>> from cambench.models import build_model
>>> from cambench.saliency import explain
>>> _ = torch.manual_seed(0)
>>> model = build_model({"width": 4, "blocks": [1, 1, 1, 1]}, num_classes=3).eval()
>>> maps = explain("opticam", model, torch.rand(2, 3, 32, 32), torch.tensor([0, 2]), iterations=5)
>>> tuple(maps.shape), float(maps.min()), float(maps.max())
((2, 32, 32), 0.0, 1.0)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cambench.saliency.core import activations, target_scores, weighted_sum
from cambench.saliency.registry import register

OBJECTIVES = ("logit", "probability")
NORMALIZATIONS = ("minmax", "max")

# Relative epsilon of the normalization during optimization (see ``normalized_mask``).
_REL_EPS = 1e-7


def combine(u: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """``S(u) = Σ_k softmax(u)_k A^k`` for ``u`` (B, K) and ``A`` (B, K, h, w)."""
    return weighted_sum(torch.softmax(u, dim=1), acts)


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
    defaults={
        "iterations": 100,
        "lr": 0.1,
        "objective": "logit",
        "normalization": "minmax",
        "activation_relu": True,
        "early_stop": False,
    },
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
    activation_relu: bool,
    early_stop: bool,
) -> torch.Tensor:
    """Opti-CAM (Zhang et al. 2024): ``α = softmax(u*)``, ``u*`` maximizing the masked logit.

    Adam (learning rate ``lr``) from ``u = 0`` for ``iterations`` steps; the returned
    map is ``S(u)`` after the last step, at the target layer's resolution.
    ``objective``: ``logit`` (the paper's choice) or ``probability`` (the softmax
    probability of the class); ``normalization`` of the mask: ``minmax`` (the paper's
    choice) or ``max`` (``S / max S``). Whatever the normalization used for the mask,
    the saved map is min-max normalized like every map (the output contract).
    ``activation_relu``: combine ``ReLU(A)`` (default, as the released code) or the raw
    ``A`` (cambench before; differs only on layers with negative activations).

    ``early_stop`` (default off), the released rule: at every step ``s`` with
    ``s mod max(iterations // 10, 1) = 0`` the batch loss (``−Σ_images objective``,
    computed before that step's update) is compared with the one of the previous
    check; if it rose, the map of that step (``S(u)`` before the update) is returned
    for the whole batch. The decision is the batch's, as in the released code, so
    with early stopping an image's map can depend on the other images of its batch.

    Each iteration costs one forward and one backward through the whole model (to the
    input mask; no parameter gradients).
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
    for name, flag in (("activation_relu", activation_relu), ("early_stop", early_stop)):
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be true or false, got {flag!r}")
    acts, _ = activations(model, images, layer=layer)
    if activation_relu:
        acts = torch.relu(acts)
    size = tuple(images.shape[-2:])
    u = torch.zeros(acts.shape[:2], device=acts.device, dtype=acts.dtype, requires_grad=True)
    # A channel that is zero everywhere only rescales S, and n is scale-invariant: its
    # gradient is 0 in exact arithmetic. Adam divides each component by its own
    # magnitude and would turn the float noise left there into steps of size lr, so
    # it is zeroed (this keeps every image's result independent of its batch).
    live = acts.flatten(2).ne(0).any(2).to(acts.dtype)
    optimizer = torch.optim.Adam([u], lr=float(lr))
    check_every = max(int(iterations) // 10, 1)
    previous = math.inf
    with torch.enable_grad():
        for step in range(int(iterations)):
            mask = normalized_mask(combine(u, acts), size, normalization)
            loss = -masked_objective(model, images, targets, mask, objective).sum()
            (grad,) = torch.autograd.grad(loss, u)
            if early_stop and step % check_every == 0:
                if loss.item() > previous:
                    return combine(u.detach(), acts)  # this step's map, before its update
                previous = loss.item()
            u.grad = grad * live
            optimizer.step()
    return combine(u.detach(), acts)
