"""Input attributions: Input × Gradient, Integrated Gradients, SmoothGrad, VarGrad,
Occlusion and RISE.

Each is a few lines over :mod:`cambench.saliency.perturb` (one path-integral rule,
one noise source, one mask batcher, chunked forward/backward passes). None uses a
target layer. The maps are signed or unsigned pixel attributions reduced over the
colour channels by ``reduce`` (:func:`cambench.saliency.perturb.reduce_channels`),
with no ReLU: ``map = n(S)``, so with a signed reduction (``sum``) evidence against
the class is darkest. Perturbed copies of the batch run ``batch_size`` rows per
forward (at least one copy of the whole batch): the memory budget.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cambench.saliency.perturb import (
    REDUCTIONS,
    RULES,
    SCORES,
    GaussianNoise,
    chunked_scores,
    gaussian_blur,
    gradient_sum,
    image_keys,
    occlusion_windows,
    path_rule,
    reduce_channels,
    rise_masks,
    target_score,
    uniform_like,
)
from cambench.saliency.registry import ParamError, check_choice, check_int, check_number, register

BASELINES = ("black", "blur", "uniform")
BLUR_SIGMA = 0.1  # the blur baseline's σ, as a fraction of the image's shorter side


def _check_reduce(params: dict[str, Any]) -> None:
    check_choice(params, "reduce", REDUCTIONS)


def _check_noise(params: dict[str, Any]) -> None:
    check_int(params, "samples", 1)
    check_number(params, "noise", 0.0, 10.0)
    check_int(params, "seed", 0)
    check_int(params, "batch_size", 1)
    _check_reduce(params)


def _check_ig(params: dict[str, Any]) -> None:
    check_choice(params, "rule", RULES)
    check_int(params, "steps", 2 if params["rule"] == "riemann_trapezoid" else 1)
    baseline = params["baseline"]
    if isinstance(baseline, str):
        check_choice(params, "baseline", BASELINES)
    elif isinstance(baseline, bool) or not isinstance(baseline, (int, float)):
        raise ParamError(
            "baseline", f"must be one of {', '.join(BASELINES)} or a number; got {baseline!r}"
        )
    check_int(params, "seed", 0)
    check_int(params, "batch_size", 1)
    _check_reduce(params)


def _noisy_gradients(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    samples: int,
    noise: float,
    seed: int,
    batch_size: int,
    squares: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``Σ_n g_n`` and, with ``squares``, ``Σ_n g_n²`` (float64) over
    ``g_n = ∂y_c/∂x (x + ε_n)``, ``ε_n ~ N(0, σ²)``, ``σ = noise · (max x − min x)``
    per image."""
    draws = GaussianNoise(images, samples, seed)
    flat = images.flatten(1)
    sigma = (noise * (flat.amax(1) - flat.amin(1))).view(1, -1, 1, 1, 1)

    def rows(k0: int, k1: int) -> torch.Tensor:
        return (images.unsqueeze(0) + sigma * draws.draws(k0, k1)).flatten(0, 1)

    return gradient_sum(model, rows, samples, targets, None, batch_size, squares=squares)


@register(
    "input_x_gradient",
    defaults={"reduce": "abs_sum"},
    uses_layer=False,
    relu=False,
    check=_check_reduce,
)
def input_x_gradient(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: None, reduce: str
) -> torch.Tensor:
    """Input × Gradient (Shrikumar et al. 2016): ``x ⊙ ∂y_c/∂x``, reduced over colours.

    ``a = x ⊙ ∂y_c/∂x`` (B, 3, H, W), ``S = reduce(a)`` (default ``abs_sum``:
    ``Σ_colour |a|``), no ReLU. One forward and one backward pass. It is Integrated
    Gradients with a black baseline and one right-Riemann step.

    Shrikumar et al., "Not Just a Black Box: Learning Important Features Through
    Propagating Activation Differences", arXiv 2016, https://arxiv.org/abs/1605.01713.

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> maps = explain("input_x_gradient", *example_inputs(), reduce="sum")
    >>> tuple(maps.shape), maps.amin((1, 2)).tolist(), maps.amax((1, 2)).tolist()
    ((2, 32, 32), [0.0, 0.0], [1.0, 1.0])
    """
    grads, _ = gradient_sum(model, lambda k0, k1: images, 1, targets, None, len(images))
    return reduce_channels(images * grads.to(images.dtype), reduce)


@register(
    "integrated_gradients",
    defaults={
        "steps": 50,
        "baseline": "black",
        "rule": "gausslegendre",
        "seed": 0,
        "batch_size": 64,
        "reduce": "abs_sum",
    },
    uses_layer=False,
    relu=False,
    check=_check_ig,
)
def integrated_gradients(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: None,
    steps: int,
    baseline: str | float,
    rule: str,
    seed: int,
    batch_size: int,
    reduce: str,
) -> torch.Tensor:
    """Integrated Gradients (Sundararajan et al. 2017), reduced over colours.

    ``a = (x − x') ⊙ ∫_0^1 ∂y_c/∂x (x' + α(x − x')) dα ≈ (x − x') ⊙ Σ_k w_k ∂y_c/∂x (x' + α_k(x − x'))``

    with ``steps`` nodes ``α_k`` and weights ``w_k`` of ``rule`` (``riemann_left``,
    ``riemann_right`` — the paper's sum —, ``riemann_middle``, ``riemann_trapezoid``,
    ``gausslegendre``, the default: Captum's); ``S = reduce(a)`` (default ``abs_sum``,
    as the paper's figures aggregate over colours), no ReLU. The baseline ``x'``:
    ``black`` (all 0), ``blur`` (``x`` blurred by a Gaussian of σ = 0.1 × the
    shorter side), ``uniform`` (noise in (0, 1), drawn from ``seed`` and the image)
    or a number (every pixel that value). ``steps`` forward/backward passes of the
    batch, ``batch_size`` rows each.

    Sundararajan, Taly, Yan, "Axiomatic Attribution for Deep Networks", ICML 2017,
    https://arxiv.org/abs/1703.01365.

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> maps = explain("integrated_gradients", *example_inputs(), steps=8, baseline="blur")
    >>> tuple(maps.shape), maps.amax((1, 2)).tolist()
    ((2, 32, 32), [1.0, 1.0])
    """
    if baseline == "black":
        start = torch.zeros_like(images)
    elif baseline == "blur":
        start = gaussian_blur(images, BLUR_SIGMA * min(images.shape[-2:]))
    elif baseline == "uniform":
        start = uniform_like(images, image_keys(images, seed))
    else:
        start = torch.full_like(images, float(baseline))
    alphas, weights = path_rule(rule, steps)
    alphas = alphas.to(images.device, images.dtype).view(-1, 1, 1, 1, 1)
    delta = images - start

    def rows(k0: int, k1: int) -> torch.Tensor:
        return (start + alphas[k0:k1] * delta).flatten(0, 1)

    grads, _ = gradient_sum(model, rows, steps, targets, weights.to(images.device), batch_size)
    return reduce_channels(delta * grads.to(images.dtype), reduce)


_NOISE_DEFAULTS = {"samples": 50, "noise": 0.15, "seed": 0, "batch_size": 64, "reduce": "abs_sum"}


@register("smoothgrad", defaults=_NOISE_DEFAULTS, uses_layer=False, relu=False, check=_check_noise)
def smoothgrad(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: None,
    samples: int,
    noise: float,
    seed: int,
    batch_size: int,
    reduce: str,
) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017): the gradient averaged over noisy copies.

    ``a = (1/N) Σ_n ∂y_c/∂x (x + ε_n)``, ``ε_n ~ N(0, σ²)`` per pixel with
    ``σ = noise · (max x − min x)`` (per image; default 0.15, the paper's 10–20 %),
    ``N = samples`` (default 50); ``S = reduce(a)`` (default ``abs_sum``, the
    absolute value summed over colours as the paper's figures), no ReLU. The noise is
    drawn from ``seed`` and read at an offset that hashes the image
    (:class:`cambench.saliency.perturb.GaussianNoise`): the same in any batch.

    Smilkov et al., "SmoothGrad: removing noise by adding noise", ICML workshop 2017,
    https://arxiv.org/abs/1706.03825.

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> model, images, targets = example_inputs(batch=3)
    >>> maps = explain("smoothgrad", model, images, targets, samples=4)
    >>> alone = explain("smoothgrad", model, images[2:], targets[2:], samples=4)
    >>> bool((maps[2] - alone[0]).abs().max() < 1e-5)  # the same noise in any batch
    True
    """
    total, _ = _noisy_gradients(model, images, targets, samples, noise, seed, batch_size, False)
    return reduce_channels((total / samples).to(images.dtype), reduce)


@register("vargrad", defaults=_NOISE_DEFAULTS, uses_layer=False, relu=False, check=_check_noise)
def vargrad(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: None,
    samples: int,
    noise: float,
    seed: int,
    batch_size: int,
    reduce: str,
) -> torch.Tensor:
    """VarGrad (Adebayo et al. 2018): the variance of the gradient over noisy copies.

    ``a = (1/N) Σ_n g_n² − ((1/N) Σ_n g_n)²`` with ``g_n = ∂y_c/∂x (x + ε_n)`` and
    the noise of :func:`smoothgrad` (same ``samples``, ``noise``, ``seed``),
    accumulated in float64; ``S = reduce(a)`` (default ``abs_sum``; ``a ≥ 0``, so
    the sum over colours), no ReLU.

    Adebayo et al., "Local Explanation Methods for Deep Neural Networks Lack
    Sensitivity to Parameter Values", ICLR workshop 2018,
    https://arxiv.org/abs/1810.03307.

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> explain("vargrad", *example_inputs(), samples=4).shape
    torch.Size([2, 32, 32])
    """
    total, squares = _noisy_gradients(
        model, images, targets, samples, noise, seed, batch_size, True
    )
    assert squares is not None
    variance = (squares / samples - (total / samples).square()).clamp_min(0)
    return reduce_channels(variance.to(images.dtype), reduce)


def _check_occlusion(params: dict[str, Any]) -> None:
    check_int(params, "window", 1)
    check_int(params, "stride", 1)
    if params["stride"] > params["window"]:
        raise ParamError(
            "stride",
            f"{params['stride']} exceeds the window {params['window']}: pixels between "
            "windows would never be occluded",
        )
    check_number(params, "fill", 0.0, 1.0)
    check_choice(params, "score", SCORES)
    check_int(params, "batch_size", 1)


def check_occlusion_fits(params: dict[str, Any], height: int, width: int) -> None:
    """ParamError naming ``window`` when the occlusion square exceeds ``height × width``
    images (its stride cannot, being at most the window): the config parser calls it
    with ``dataset.image_size``, the method itself with its images' size."""
    if params["window"] > min(height, width):
        raise ParamError("window", f"{params['window']} exceeds the {height}x{width} images")


@register(
    "occlusion",
    defaults={"window": 8, "stride": 4, "fill": 0.5, "score": "probability", "batch_size": 256},
    uses_layer=False,
    relu=False,
    check=_check_occlusion,
)
def occlusion(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: None,
    window: int,
    stride: int,
    fill: float,
    score: str,
    batch_size: int,
) -> torch.Tensor:
    """Occlusion (Zeiler & Fergus 2014): the score drop when a square is greyed out.

    A ``window × window`` square (all colours) set to ``fill`` (default 0.5, grey)
    slides with ``stride`` (the last position touching the border, clipped); ``Ω``
    the set of positions covering pixel ``ij``:

        S_ij = (1/|Ω_ij|) Σ_{ω ∈ Ω_ij} (s_c(x) − s_c(x with ω filled))

    with ``s_c`` the target's softmax probability (``score: probability``, as the
    paper's figures) or its logit (``score: logit``); no ReLU (a square whose removal
    raises the score is darkest). One forward per position, ``batch_size`` rows each,
    plus one. Captum's ``Occlusion`` with window (3, w, w) computes the same values.

    Zeiler, Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014,
    https://arxiv.org/abs/1311.2901.

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> explain("occlusion", *example_inputs(), window=8, stride=8).shape
    torch.Size([2, 32, 32])
    """
    h, w = images.shape[-2:]
    try:
        check_occlusion_fits({"window": window}, h, w)
    except ParamError as err:
        raise ValueError(f"occlusion window (methods.occlusion.window): {err.message}") from None
    rows_mask = occlusion_windows(h, window, stride, images.device).to(images.dtype)
    cols_mask = occlusion_windows(w, window, stride, images.device).to(images.dtype)
    n_cols = len(cols_mask)
    positions = len(rows_mask) * n_cols

    def rows(k0: int, k1: int) -> torch.Tensor:
        k = torch.arange(k0, k1, device=images.device)
        masks = (rows_mask[k // n_cols, :, None] * cols_mask[k % n_cols, None, :])[:, None, None]
        return (images * (1 - masks) + fill * masks).flatten(0, 1)

    drops = torch.empty(positions, len(images), device=images.device, dtype=images.dtype)
    for k0, k1, s in chunked_scores(model, rows, positions, targets, score, batch_size):
        drops[k0:k1] = s
    drops = target_score(model, images, targets, score) - drops
    total = torch.einsum(
        "ijb,ih,jw->bhw", drops.view(len(rows_mask), n_cols, -1), rows_mask, cols_mask
    )
    return total / (rows_mask.sum(0)[:, None] * cols_mask.sum(0)[None, :])


def _check_rise(params: dict[str, Any]) -> None:
    check_int(params, "masks", 1)
    check_int(params, "cell_size", 1)
    check_number(params, "p", 0.0, 1.0, open_low=True)
    check_int(params, "seed", 0)
    check_choice(params, "score", SCORES)
    check_int(params, "batch_size", 1)


@register(
    "rise",
    defaults={
        "masks": 4000,
        "cell_size": 8,
        "p": 0.5,
        "seed": 0,
        "score": "probability",
        "batch_size": 256,
    },
    uses_layer=False,
    relu=False,
    check=_check_rise,
)
def rise(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: None,
    masks: int,
    cell_size: int,
    p: float,
    seed: int,
    score: str,
    batch_size: int,
) -> torch.Tensor:
    """RISE (Petsiuk et al. 2018): masks weighted by the score of the masked image.

        S_ij = 1/(N·p) Σ_{n=1}^{N} s_c(x ⊙ M_n) · M_n,ij

    with ``N = masks`` (default 4000, the paper's for ResNet-50) random smooth masks
    ``M_n`` (:func:`cambench.saliency.perturb.rise_masks`: cells of ``cell_size``
    pixels kept with probability ``p``, upsampled bilinearly and randomly shifted;
    drawn from ``seed`` on the images' device, the same for every image) and ``s_c``
    the target's softmax probability (the paper's) or logit (``score: logit``); no
    ReLU. ``N`` forwards of the batch, ``batch_size`` rows each.

    Petsiuk, Das, Saenko, "RISE: Randomized Input Sampling for Explanation of
    Black-box Models", BMVC 2018, https://arxiv.org/abs/1806.07421.

    >>> from cambench.saliency import explain
    >>> from cambench.saliency.core import example_inputs
    >>> explain("rise", *example_inputs(), masks=64).shape
    torch.Size([2, 32, 32])
    """
    size = tuple(images.shape[-2:])
    total = torch.zeros(len(images), *size, device=images.device, dtype=images.dtype)
    drawn: dict[int, torch.Tensor] = {}

    def rows(k0: int, k1: int) -> torch.Tensor:
        m = rise_masks(k0, k1, size, cell_size, p, seed, images.device, images.dtype)
        drawn[k0] = m
        return (images.unsqueeze(0) * m[:, None, None]).flatten(0, 1)

    for k0, _, s in chunked_scores(model, rows, masks, targets, score, batch_size):
        total += torch.einsum("nb,nhw->bhw", s, drawn.pop(k0))
    return total / (masks * p)
