"""CAMs weighted by forward passes on perturbed inputs or features.

Score-CAM masks the image with each upsampled channel; Ablation-CAM zeroes each
channel of the target layer. Both need one forward per (image, channel) pair, so both
run them in chunks of ``batch_size`` rows that mix images and channels (no per-image
loop), skip the rows whose result is known without a forward, and work under
``torch.no_grad()``. No call of the model ever sees more than ``batch_size`` images.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cambench.models.inference import inference_copy
from cambench.models.tail import ModelTail, trace_tail
from cambench.saliency.core import (
    Layout,
    activations,
    layer_layout,
    target_scores,
    weighted_sum,
)
from cambench.saliency.registry import register

# pytorch-grad-cam's ScoreCAM: (H - min) / (max - min + 1e-8) for the channel masks.
_SCORECAM_EPS = 1e-8


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@dataclass(frozen=True)
class CleanPass:
    """The target layer's map ``A`` (B, K, h, w) and the logits of the unperturbed
    images, with what turns rows of ``A`` back into the layer's own output."""

    acts: torch.Tensor
    logits: torch.Tensor
    layout: Layout
    rest: torch.Tensor | None  # what the map leaves out, per image (a ViT's class token)

    def layer_output(self, acts: torch.Tensor, rows_b: torch.Tensor) -> torch.Tensor:
        """Rows ``acts`` of images ``rows_b`` in the layer's own layout (tokens,
        channels last), as the layers after it expect."""
        if self.layout is None:
            return acts
        return self.layout.to_output(acts, None if self.rest is None else self.rest[rows_b])


def clean_forward(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: nn.Module,
    batch_size: int,
) -> CleanPass:
    """``A`` and the logits of the unperturbed images, ``batch_size`` images per forward
    (:func:`cambench.saliency.core.activations`); a hook of its own keeps the layer's
    layout and what the map leaves out."""
    layouts: list[Layout] = []
    rests: list[torch.Tensor | None] = []

    def keep(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        layouts.append(layer_layout(module, output))
        rests.append(None if layouts[-1] is None else layouts[-1].rest(output))

    handle = layer.register_forward_hook(keep)
    try:
        parts = [
            activations(model, images[s], targets[s], layer)
            for s in _chunks(len(images), batch_size)
        ]
    finally:
        handle.remove()
    rest = None if rests[0] is None else torch.cat(rests)
    acts, logits = torch.cat([a for a, _ in parts]), torch.cat([y for _, y in parts])
    return CleanPass(acts, logits, layouts[0], rest)


# ---------------------------------------------------------------------------------------
# Score-CAM


@register("scorecam", defaults={"batch_size": 256})
@torch.no_grad()
def scorecam(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: nn.Module,
    batch_size: int,
) -> torch.Tensor:
    """Score-CAM (Wang et al. 2020), pytorch-grad-cam variant: ``α = softmax_k y_c(x ⊙ H^k)``.

    ``S = Σ_k α_k A^k`` with ``α = softmax_k(s)``, ``s_k = y_c(x ⊙ H^k)`` the logit of
    the image masked by channel ``k``. As in pytorch-grad-cam's ``ScoreCAM``:

    - ``H^k = (U^k - min U^k) / (max U^k - min U^k + 1e-8)`` with ``U^k`` the channel
      upsampled **with** ``align_corners=True`` (``torch.nn.UpsamplingBilinear2d``),
      unlike the ``align_corners=False`` of the final maps;
    - ``s_k`` is the logit (no softmax over classes), ``α = softmax_k(s)``. (The paper
      takes the increase of the class score over that of a baseline image.)

    Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional
    Neural Networks", CVPR Workshops 2020, https://arxiv.org/abs/1910.01279.

    ``batch_size`` masked images go through the model per forward, rows mixing images
    and channels, through an inference copy of the model
    (:func:`cambench.models.inference.inference_copy`). A channel that is constant at layer resolution has an all-zero mask
    (``n`` of a constant map), i.e. a black image: its score is the logit of one black
    image, computed once. (For a nonzero constant, pytorch-grad-cam instead divides
    the rounding noise of its upsampled map by 1e-8; with ReLU features a constant
    channel is a dead, all-zero one, where both agree exactly.)

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> model, images, targets = example_inputs()  # a seeded SmallResNet, 2 images
    >>> maps = explain("scorecam", model, images, targets, batch_size=64)  # 64 rows per forward
    >>> maps.shape
    torch.Size([2, 32, 32])
    """
    batch_size = _check_batch_size(batch_size)
    acts = clean_forward(model, images, targets, layer, batch_size).acts
    b, k = acts.shape[:2]
    size = tuple(images.shape[-2:])
    model = inference_copy(model, images.device)  # the masked forwards: folded, channels-last
    flat = acts.flatten(2)
    constant = flat.amax(2) == flat.amin(2)
    scores = torch.empty(b, k, device=acts.device, dtype=torch.float32)
    if constant.any():
        black = model(torch.zeros_like(images[:1])).float()
        scores[:] = black[0, targets].view(b, 1)
    b_idx, k_idx = (~constant).nonzero(as_tuple=True)
    for s in _chunks(len(b_idx), batch_size):
        rows_b, rows_k = b_idx[s], k_idx[s]
        up = F.interpolate(
            acts[rows_b, rows_k].unsqueeze(1), size=size, mode="bilinear", align_corners=True
        )
        low = up.amin((2, 3), keepdim=True)
        high = up.amax((2, 3), keepdim=True)
        masks = (up - low) / (high - low + _SCORECAM_EPS)
        logits = model(images[rows_b] * masks)
        scores[rows_b, rows_k] = target_scores(logits, targets[rows_b]).float()
    return weighted_sum(torch.softmax(scores, dim=1), acts)


# ---------------------------------------------------------------------------------------
# Ablation-CAM: "the rest of the network" after the target layer


def _context_values(
    split: ModelTail, images: torch.Tensor, batch_size: int
) -> list[torch.Tensor] | None:
    """The tail's context for every image (first dimension = image), or ``None``."""
    if split.head is None:
        return []
    parts: list[tuple] = []
    for s in _chunks(len(images), batch_size):
        values = split.head(images[s])
        n = s.stop - s.start
        if not all(isinstance(v, torch.Tensor) and v.ndim >= 1 and len(v) == n for v in values):
            return None  # e.g. a batch size held as an int: cannot be expanded per row
        parts.append(tuple(values))
    return [torch.cat(column) for column in zip(*parts, strict=True)]


def _tail_logits(
    split: ModelTail,
    context: list[torch.Tensor],
    clean: CleanPass,
    acts: torch.Tensor,
    rows_b: torch.Tensor,
) -> torch.Tensor:
    """The tail's logits for rows ``acts`` (maps) of images ``rows_b``."""
    return split.tail(clean.layer_output(acts, rows_b), *(c[rows_b] for c in context))


def _ablated(acts: torch.Tensor, rows_b: torch.Tensor, rows_k: torch.Tensor) -> torch.Tensor:
    """``A`` of image ``rows_b[i]`` with channel ``rows_k[i]`` zeroed, one row each."""
    rows = acts[rows_b]
    rows[torch.arange(len(rows), device=rows.device), rows_k] = 0
    return rows


def _tail_is_faithful(
    split: ModelTail, context: list[torch.Tensor], clean: CleanPass, batch_size: int
) -> bool:
    """Does the tail reproduce the model's logits, with each image repeated twice?"""
    acts = clean.acts
    rows_b = torch.arange(len(acts), device=acts.device).repeat_interleave(2)
    try:
        out = torch.cat(
            [
                _tail_logits(split, context, clean, acts[rows_b[s]], rows_b[s])
                for s in _chunks(len(rows_b), batch_size)
            ]
        )
    except Exception:
        return False
    expected = clean.logits[rows_b]
    if not isinstance(out, torch.Tensor) or out.shape != expected.shape:
        return False
    scale = float(expected.abs().max()) + 1.0
    return bool(torch.allclose(out, expected, rtol=1e-3, atol=1e-4 * scale))


def _scores_by_tail(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: nn.Module,
    clean: CleanPass,
    rows: tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
) -> torch.Tensor | None:
    """Ablated target logits from the layers after ``layer`` only; ``None`` if unsafe."""
    split = trace_tail(model, layer)
    if split is None:
        return None
    try:
        context = _context_values(split, images, batch_size)
    except Exception:
        return None
    if context is None or not _tail_is_faithful(split, context, clean, batch_size):
        return None
    b_idx, k_idx = rows
    acts = clean.acts
    scores = torch.empty(len(b_idx), device=acts.device, dtype=torch.float32)
    for s in _chunks(len(b_idx), batch_size):
        rows_b = b_idx[s]
        out = _tail_logits(split, context, clean, _ablated(acts, rows_b, k_idx[s]), rows_b)
        scores[s] = target_scores(out, targets[rows_b]).float()
    return scores


def _scores_by_model(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: nn.Module,
    acts: torch.Tensor,
    rows: tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
) -> torch.Tensor:
    """Ablated target logits from whole forwards whose ``layer`` output is replaced.

    Correct for any model (as pytorch-grad-cam does it), but re-runs the layers
    before the target layer for every chunk.
    """
    replacement: list[torch.Tensor] = []

    def substitute(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        layout = layer_layout(module, output)  # tokens, channels last: back to the output's
        return replacement[0] if layout is None else layout.to_output(replacement[0], output)

    b_idx, k_idx = rows
    scores = torch.empty(len(b_idx), device=acts.device, dtype=torch.float32)
    handle = layer.register_forward_hook(substitute)
    try:
        for s in _chunks(len(b_idx), batch_size):
            rows_b = b_idx[s]
            replacement[:] = [_ablated(acts, rows_b, k_idx[s])]
            scores[s] = target_scores(model(images[rows_b]), targets[rows_b]).float()
    finally:
        handle.remove()
    return scores


def ablation_scores(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: nn.Module,
    batch_size: int,
    split: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(A, y_c, y_c^(k))``: activations, target logits and the logits with channel
    ``k`` zeroed (B, K). ``split=False`` forces whole-model forwards."""
    clean = clean_forward(model, images, targets, layer, batch_size)
    acts = clean.acts
    y = target_scores(clean.logits, targets).float()
    b, k = acts.shape[:2]
    # Ablating a channel that is already all zero changes nothing: y^(k) = y.
    rows = acts.flatten(2).ne(0).any(2).nonzero(as_tuple=True)
    ablated = y.view(b, 1).repeat(1, k)
    scores = None
    if split:
        scores = _scores_by_tail(model, images, targets, layer, clean, rows, batch_size)
    if scores is None:
        scores = _scores_by_model(model, images, targets, layer, acts, rows, batch_size)
    ablated[rows] = scores
    return acts, y, ablated


@register("ablationcam", defaults={"batch_size": 256})
@torch.no_grad()
def ablationcam(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: nn.Module,
    batch_size: int,
) -> torch.Tensor:
    """Ablation-CAM (Desai & Ramaswamy 2020): ``α_k = (y_c − y_c^(k)) / y_c``.

    ``S = Σ_k α_k A^k``; ``y_c^(k)`` is the logit with channel ``k`` of the target
    layer's output set to zero, the layers after it re-run.

    Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional
    Network via Gradient-free Localization", WACV 2020,
    https://doi.org/10.1109/WACV45572.2020.9093360.

     pytorch-grad-cam's ``AblationCAM`` does the same when the activation has a
    zero somewhere (always the case after a ReLU); when its minimum is not zero it
    ablates to ``min − 1e7`` instead, cumulatively within a batch, which makes its
    result depend on its batch size; cambench always zeroes. The formula has no
    epsilon (as pytorch-grad-cam); where ``y_c`` is exactly 0 the weights are
    ``y_c − y_c^(k)``.

    The ablated logits come from the layers after the target layer only: the model
    is split with torch.fx, and the split is checked against the model's own logits
    before use. Models that cannot be traced or split, and models with forward hooks,
    run whole forwards with the layer's output substituted (same result, slower).
    Channels that are already all zero are not ablated (their weight is 0).
    ``batch_size`` rows per forward.

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> model, images, targets = example_inputs()  # a seeded SmallResNet, 2 images
    >>> explain("ablationcam", model, images, targets).shape
    torch.Size([2, 32, 32])
    """
    batch_size = _check_batch_size(batch_size)
    acts, y, ablated = ablation_scores(model, images, targets, layer, batch_size)
    denom = torch.where(y == 0, torch.ones_like(y), y).view(-1, 1)
    return weighted_sum((y.view(-1, 1) - ablated) / denom, acts)
