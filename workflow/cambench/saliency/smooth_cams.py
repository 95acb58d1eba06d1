"""torchcam's smoothed CAMs: SS-CAM and IS-CAM (Score-CAM over noisy or scaled masks)
and SmoothGrad-CAM++ (Grad-CAM++ over noisy images), as torchcam 0.5 computes them.

The Score-CAM variants reuse Score-CAM's batching (:mod:`cambench.saliency.score_cams`):
the clean pass, ``batch_size`` masked images per forward with rows mixing samples,
images and channels, through an inference copy of the model. Noise comes from a
``torch.Generator`` seeded with ``seed`` on the images' device, drawn in torchcam's
order (sample by sample, then image, then channel), so on the CPU the draws are
torchcam's after ``torch.manual_seed(seed)`` (exactly so when each chunk's number of
values is a multiple of 16, e.g. 32 × 32 or 224 × 224 images). As in torchcam, an
image's noise depends on the images in its batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cambench.models.inference import inference_copy
from cambench.saliency.core import activations_and_gradients, target_scores, weighted_sum
from cambench.saliency.registry import check_int, check_number, register
from cambench.saliency.score_cams import _check_batch_size, _chunks, clean_forward

# torchcam's _CAM._normalize: (A - min) / (max - min + 1e-8), and its Grad-CAM++ eps.
_TORCHCAM_EPS = 1e-8


def _check_samples(params: dict[str, Any]) -> None:
    check_int(params, "samples", 1)
    check_int(params, "batch_size", 1)
    if "std" in params:
        check_number(params, "std", 0, float("inf"))
    if "seed" in params:
        check_int(params, "seed", 0)


def _generator(images: torch.Tensor, seed: int) -> torch.Generator:
    return torch.Generator(device=images.device).manual_seed(int(seed))


def _upsampled_masks(acts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """torchcam's Score-CAM masks at input size: each channel min-max scaled at the
    layer's resolution (``+ 1e-8`` in the denominator), then upsampled bilinearly
    (``align_corners=False``). (B, K, h, w) → (B, K, H, W)."""
    flat = acts.flatten(2)
    low = flat.amin(2, keepdim=True)
    scaled = (flat - low) / ((flat - low).amax(2, keepdim=True) + _TORCHCAM_EPS)
    return F.interpolate(scaled.view_as(acts), size=size, mode="bilinear", align_corners=False)


def masked_scores(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    rows_b: torch.Tensor,
    masks: Callable[[slice], torch.Tensor],
    batch_size: int,
) -> torch.Tensor:
    """Target logits ``y_c(x_b ⊙ M_r)`` for rows ``r`` of images ``rows_b``, float32.

    ``masks(s)`` gives the masks (n, 1 or 3, H, W) of rows ``s`` (a slice), built
    chunk by chunk so that at most ``batch_size`` masked images exist at once; the
    forwards run under ``no_grad`` through an inference copy of the model.
    """
    model = inference_copy(model, images.device)
    scores = torch.empty(len(rows_b), device=images.device, dtype=torch.float32)
    with torch.no_grad():
        for s in _chunks(len(rows_b), batch_size):
            logits = model(images[rows_b[s]] * masks(s))
            scores[s] = target_scores(logits, targets[rows_b[s]]).float()
    return scores


@register(
    "sscam",
    defaults={"samples": 35, "std": 2.0, "seed": 0, "batch_size": 256},
    check=_check_samples,
)
@torch.no_grad()
def sscam(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: nn.Module,
    samples: int,
    std: float,
    seed: int,
    batch_size: int,
) -> torch.Tensor:
    """SS-CAM (Wang, Naidu et al. 2020): Score-CAM with channel masks smoothed by noise.

    ``S = Σ_k α_k A^k``, ``α = softmax_k(s)``, ``s_k = (1/N) Σ_{i=1}^N y_c(x ⊙ (M_k + δ_i))``
    with ``M_k = up(n(A^k))`` (``n`` min-max scaling at the layer's resolution,
    ``up`` bilinear upsampling to the image) and ``δ_i ~ N(0, std²)`` drawn per
    sample, channel and pixel; ``N = samples``. As torchcam's ``SSCAM`` (defaults
    ``num_samples=35, std=2.0``); torchcam subtracts the unmasked image's score from
    every ``s_k``, which the softmax ignores. The paper adds the noise to the masked
    input or to the mask; torchcam, and cambench, to the mask.

    Wang, Naidu et al., "SS-CAM: Smoothed Score-CAM for Sharper Visual Feature
    Localization", 2020, https://arxiv.org/abs/2006.14255.

    ``samples · K`` masked forwards per image (no channel can be skipped: the noise
    makes every mask different), ``batch_size`` per forward.

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> model, images, targets = example_inputs()  # a seeded SmallResNet, 2 images
    >>> maps = explain("sscam", model, images, targets, samples=4, seed=1)
    >>> maps.equal(explain("sscam", model, images, targets, samples=4, seed=1))
    True
    """
    batch_size = _check_batch_size(batch_size)
    acts = clean_forward(model, images, targets, layer, batch_size).acts
    b, k = acts.shape[:2]
    size = tuple(images.shape[-2:])
    up = _upsampled_masks(acts, size).flatten(0, 1)  # (B·K, H, W), row b·K + k
    rows = torch.arange(samples * b * k, device=images.device) % (b * k)
    gen = _generator(images, seed)

    def noisy(s: slice) -> torch.Tensor:
        noise = torch.randn(
            (s.stop - s.start, *size), generator=gen, device=images.device, dtype=up.dtype
        )
        return noise.mul_(std).add_(up[rows[s]]).unsqueeze(1)  # M_k + δ, in place

    scores = masked_scores(model, images, targets, rows // k, noisy, batch_size)
    return weighted_sum(torch.softmax(scores.view(samples, b, k).mean(0), dim=1), acts)


@register("iscam", defaults={"samples": 10, "batch_size": 256}, check=_check_samples)
@torch.no_grad()
def iscam(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: nn.Module,
    samples: int,
    batch_size: int,
) -> torch.Tensor:
    """IS-CAM (Naidu et al. 2020): Score-CAM with each channel's score integrated over
    scaled copies of its masked image.

    ``S = Σ_k α_k A^k``, ``α = softmax_k(s)``, ``s_k = (1/N) Σ_{i=1}^N y_c(c_i · x ⊙ M_k)``,
    ``M_k = up(n(A^k))`` as in SS-CAM, ``N = samples`` and, as torchcam's ``ISCAM``
    computes it, ``c_i = Σ_{j=1}^{i} j/N = i(i+1)/(2N)``. torchcam's docstring states
    the paper's sum as ``Σ_{j=0}^{i−1} j/N`` (``c_1 = 0``: a black image); its code, and
    cambench, start one step later. (The coefficients grow past 1, to ``(N+1)/2`` for
    the last sample: the masked image is brightened beyond the input's range.)
    Default ``samples = 10`` (torchcam's).

    Naidu et al., "IS-CAM: Integrated Score-CAM for axiomatic-based explanations",
    2020, https://arxiv.org/abs/2010.03023.

    ``samples · K`` masked forwards per image, ``batch_size`` per forward; a channel
    constant at the layer's resolution has an all-zero mask, so all its samples are
    one black image, scored once.

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> model, images, targets = example_inputs()  # a seeded SmallResNet, 2 images
    >>> explain("iscam", model, images, targets, samples=3).shape
    torch.Size([2, 32, 32])
    """
    batch_size = _check_batch_size(batch_size)
    acts = clean_forward(model, images, targets, layer, batch_size).acts
    b, k = acts.shape[:2]
    size = tuple(images.shape[-2:])
    up = _upsampled_masks(acts, size).flatten(0, 1)
    flat = acts.flatten(2)
    live = (flat.amax(2) != flat.amin(2)).flatten().nonzero().squeeze(1)  # rows b·K + k
    steps = torch.arange(1, samples + 1, device=images.device, dtype=up.dtype)
    coeff = torch.cumsum(steps / samples, 0)  # c_i = Σ_{j ≤ i} j / N
    step = torch.arange(samples, device=images.device).repeat_interleave(len(live))
    rows = live.repeat(samples)

    def scaled(s: slice) -> torch.Tensor:
        return (coeff[step[s]].view(-1, 1, 1) * up[rows[s]]).unsqueeze(1)

    scores = torch.empty(samples, b * k, device=images.device, dtype=torch.float32)
    if len(live) < b * k:
        black = inference_copy(model, images.device)(torch.zeros_like(images[:1])).float()
        scores[:] = black[0, targets].repeat_interleave(k).view(1, -1)
    if len(live):
        scores[step, rows] = masked_scores(model, images, targets, rows // k, scaled, batch_size)
    return weighted_sum(torch.softmax(scores.mean(0).view(b, k), dim=1), acts)


@register(
    "smoothgradcampp",
    defaults={"samples": 4, "std": 0.3, "seed": 0, "batch_size": 64},
    check=_check_samples,
)
def smoothgradcampp(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: nn.Module,
    samples: int,
    std: float,
    seed: int,
    batch_size: int,
) -> torch.Tensor:
    """SmoothGrad-CAM++ (Omeiza et al. 2019): Grad-CAM++ with its derivatives averaged
    over noisy copies of the image, as torchcam's ``SmoothGradCAMpp``.

    With ``x_i = x + δ_i``, ``δ_i ~ N(0, std²)`` per pixel, ``G_i = ∂y_c/∂A`` at ``x_i``,
    ``D² = (1/N) Σ_i G_i²``, ``D³ = (1/N) Σ_i G_i³`` (``N = samples``) and ``A`` the
    clean image's activations:

        ``a^k_ij = D²^k_ij / (2 D²^k_ij + Σ_ab A^k_ab D³^k_ab + 1e-8)``,
        ``α_k = Σ_ij a^k_ij ReLU(G^k_{N,ij})``, ``S = Σ_k α_k A^k_N``,

    where ``G_N``, ``A_N`` are the gradient and activations of the last noisy copy.
    Where this is torchcam's and not the paper's: the numerator is ``D²`` (the paper
    writes the mean first derivative; torchcam's documented correction); the
    denominator's sum is ``Σ_ab A_ab D³_ab``, one number per channel, where
    Grad-CAM++ (and cambench's ``gradcampp``) has ``D³_ij Σ_ab A_ab``; and the ReLU'd
    gradient and the activations combined are the last noisy sample's, not an average
    or the clean image's. Defaults ``samples = 4``, ``std = 0.3`` (torchcam's; in units
    of the [0, 1] image, the model normalizing inside).

    Omeiza et al., "Smooth Grad-CAM++: An Enhanced Inference Level Visualization
    Technique for Deep Convolutional Neural Network Models", 2019,
    https://arxiv.org/abs/1908.01224.

    One clean forward and ``samples`` noisy forward/backward passes per image, the noisy
    ones ``batch_size`` images per pass.

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> model, images, targets = example_inputs()  # a seeded SmallResNet, 2 images
    >>> explain("smoothgradcampp", model, images, targets, samples=2).shape
    torch.Size([2, 32, 32])
    """
    batch_size = _check_batch_size(batch_size)
    b = len(images)
    acts = clean_forward(model, images, targets, layer, batch_size).acts
    gen = _generator(images, seed)
    rows = torch.arange(samples * b, device=images.device) % b  # sample-major
    d2 = torch.zeros_like(acts)
    d3 = torch.zeros_like(acts)
    last_acts, last_grads = torch.empty_like(acts), torch.empty_like(acts)
    for s in _chunks(len(rows), batch_size):
        noise = torch.randn(
            (s.stop - s.start, *images.shape[1:]),
            generator=gen,
            device=images.device,
            dtype=images.dtype,
        )
        rows_b = rows[s]
        a, g, _ = activations_and_gradients(
            model, images[rows_b] + noise * std, targets[rows_b], layer
        )
        d2.index_add_(0, rows_b, g.pow(2))
        d3.index_add_(0, rows_b, g.pow(3))
        last = torch.arange(s.start, s.stop, device=images.device) >= (samples - 1) * b
        last_acts[rows_b[last]] = a[last]
        last_grads[rows_b[last]] = g[last]
    d2, d3 = d2 / samples, d3 / samples
    denom = 2 * d2 + (d3 * acts).sum((2, 3), keepdim=True) + _TORCHCAM_EPS
    alpha = d2 / denom
    return weighted_sum((alpha * last_grads.clamp_min(0)).sum((2, 3)), last_acts)
