"""Shared machinery of the input attributions (:mod:`cambench.saliency.attribution`).

One helper per concern, all batched on the images' device:

- :func:`reduce_channels`: a pixel attribution (B, 3, H, W) to a map (B, H, W);
- :func:`image_keys`, :class:`GaussianNoise`, :func:`uniform_like`: random numbers
  keyed by the seed and the image's content, so an image gets the same draws in any
  batch, shard or device;
- :func:`path_rule`: the quadrature nodes and weights of a path integral on [0, 1];
- :func:`gradient_sum`: ``Σ_k w_k ∂y_c/∂x`` over perturbed copies of the batch,
  ``rows_per_chunk`` rows per forward/backward (the memory budget);
- :func:`chunked_scores`: the target's logit or probability of perturbed copies,
  forward only, chunked alike;
- :func:`rise_draws`, :func:`rise_masks` and :func:`occlusion_windows`: the masks of RISE and Occlusion.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cambench.saliency.baselines import _hash32
from cambench.saliency.core import check_gradients, check_logits

REDUCTIONS = ("abs_max", "abs_sum", "sum", "l2")
RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")
SCORES = ("probability", "logit")
_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B1

# --- reduction --------------------------------------------------------------------------


def reduce_channels(attribution: torch.Tensor, reduce: str) -> torch.Tensor:
    """A pixel attribution ``a`` (B, C, H, W) as a map (B, H, W):

    - ``abs_max``: ``max_colour |a|`` (Simonyan et al.'s gradient map);
    - ``abs_sum``: ``Σ_colour |a|``;
    - ``sum``: ``Σ_colour a`` (signed: evidence against the class is low);
    - ``l2``: ``(Σ_colour a²)^½``.

    >>> a = torch.tensor([[[[1.0]], [[-2.0]], [[2.0]]]])  # (1, 3, 1, 1)
    >>> [reduce_channels(a, r).item() for r in REDUCTIONS]
    [2.0, 5.0, 1.0, 3.0]
    """
    if reduce == "abs_max":
        return attribution.abs().amax(1)
    if reduce == "abs_sum":
        return attribution.abs().sum(1)
    if reduce == "sum":
        return attribution.sum(1)
    if reduce == "l2":
        return torch.linalg.vector_norm(attribution, dim=1)
    raise ValueError(f"reduce must be one of {', '.join(REDUCTIONS)}; got {reduce!r}")


# --- counter-based random numbers -------------------------------------------------------


def image_keys(images: torch.Tensor, seed: int) -> torch.Tensor:
    """(B,) int64 keys in [0, 2³²): a hash of ``seed`` and each image's pixels (as
    0–255 integers) with their positions; equal images get equal keys."""
    pixels = (images.detach() * 255).round().to(torch.int64).flatten(1)
    position = torch.arange(pixels.shape[1], device=images.device)
    key = _hash32((pixels + 256 * position) & _MASK32).sum(1) & _MASK32
    return seed_key(key, seed)


def seed_key(key: torch.Tensor | int, seed: int) -> torch.Tensor:
    """``key`` (a tensor of keys, or an int) mixed with ``seed``."""
    key = torch.as_tensor(key, dtype=torch.int64)
    salt = _hash32(torch.tensor(int(seed) & _MASK32, device=key.device))
    return _hash32((key + salt) & _MASK32)


def _uniform(keys: torch.Tensor, counters: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Uniform in (0, 1), 24 bits, from keys (K,) and counters (n,): shape (K, n)."""
    bits = _hash32((keys.view(-1, 1) + counters.view(1, -1) * _GOLDEN) & _MASK32) >> 8
    return ((bits.to(torch.float64) + 0.5) / 2**24).to(dtype)


def uniform_like(images: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Uniform noise in (0, 1) shaped like ``images``, image ``b`` drawn from ``keys[b]``."""
    counters = torch.arange(images[0].numel(), device=images.device)
    return _uniform(keys, counters, images.dtype).view_as(images)


class GaussianNoise:
    """Standard normal draws ``ε_{n,b}`` (shaped like one image) for samples ``n`` of
    images ``b``, the same for an image in any batch.

    One table of ``samples × (pixels of an image)`` normals is drawn from ``seed``
    (on the CPU, so every device gets the same numbers) and image ``b`` reads it
    circularly from an offset that hashes ``seed`` and its content
    (:func:`image_keys`): its ``samples`` draws are disjoint stretches of the table,
    independent N(0, 1) values. One gather per chunk (a hash per drawn value would
    cost more than the model's forward on small models).

    >>> images = torch.rand(3, 3, 4, 4)
    >>> noise = GaussianNoise(images, samples=5, seed=0)
    >>> eps = noise.draws(0, 5)
    >>> tuple(eps.shape), eps[2:4].equal(noise.draws(2, 4))
    ((5, 3, 3, 4, 4), True)
    >>> eps[:, 1:].equal(GaussianNoise(images[1:], samples=5, seed=0).draws(0, 5))
    True
    """

    def __init__(self, images: torch.Tensor, samples: int, seed: int) -> None:
        self.shape = tuple(images.shape[1:])
        self.pixels = math.prod(self.shape)
        self.length = samples * self.pixels
        table = torch.randn(self.length, generator=torch.Generator().manual_seed(int(seed)))
        table = table.to(images.device, images.dtype)
        self.table = torch.cat([table, table])  # read circularly without a modulo
        self.offsets = image_keys(images, seed) % self.length

    def draws(self, start: int, stop: int) -> torch.Tensor:
        """``ε`` for samples ``start … stop−1``: (stop − start, B, *shape)."""
        position = torch.arange(start * self.pixels, stop * self.pixels, device=self.table.device)
        index = self.offsets.view(1, -1, 1) + position.view(stop - start, 1, self.pixels)
        return self.table[index].view(stop - start, len(self.offsets), *self.shape)


# --- path integrals ---------------------------------------------------------------------


def path_rule(rule: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes ``α_k`` and weights ``w_k`` (float64, ``steps`` each) of a quadrature of
    ``∫_0^1 g(α) dα ≈ Σ_k w_k g(α_k)``:

    - ``riemann_left`` / ``riemann_right`` / ``riemann_middle``: ``α_k`` = ``k/m``,
      ``(k+1)/m``, ``(k+½)/m`` for ``k = 0 … m−1``, ``w_k = 1/m``;
    - ``riemann_trapezoid``: ``α_k = k/(m−1)``, ``w = 1/(m−1)`` halved at both ends
      (the weights sum to 1; Captum's sum to ``(m−1)/m``, a constant factor);
    - ``gausslegendre``: Gauss–Legendre nodes and weights mapped to [0, 1].

    >>> nodes, weights = path_rule("riemann_trapezoid", 3)
    >>> nodes.tolist(), weights.tolist()
    ([0.0, 0.5, 1.0], [0.25, 0.5, 0.25])
    """
    m = steps
    k = torch.arange(m, dtype=torch.float64)
    if rule == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(m)
        return torch.from_numpy((x + 1) / 2), torch.from_numpy(w / 2)
    if rule == "riemann_trapezoid":
        if m < 2:
            raise ValueError("riemann_trapezoid needs steps >= 2")
        weights = torch.full((m,), 1 / (m - 1), dtype=torch.float64)
        weights[[0, -1]] /= 2
        return k / (m - 1), weights
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}.get(rule)
    if offset is None:
        raise ValueError(f"rule must be one of {', '.join(RULES)}; got {rule!r}")
    return (k + offset) / m, torch.full((m,), 1 / m, dtype=torch.float64)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Images (B, C, H, W) convolved with a Gaussian of ``sigma`` pixels (separable,
    truncated at 3σ, reflected at the border)."""
    radius = max(1, min(int(math.ceil(3 * sigma)), min(images.shape[-2:]) - 1))
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    out = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


# --- chunked passes ---------------------------------------------------------------------


def _steps_per_chunk(rows_per_chunk: int, batch: int, steps: int) -> int:
    return max(1, min(steps, rows_per_chunk // batch))


def gradient_sum(
    model: nn.Module,
    rows: Callable[[int, int], torch.Tensor],
    steps: int,
    targets: torch.Tensor,
    weights: torch.Tensor | None,
    rows_per_chunk: int,
    squares: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``Σ_k w_k ∂y_c/∂x_k`` (B, 3, H, W) in float64 over ``steps`` perturbed copies
    ``x_k`` of the batch (``w_k = 1`` for ``weights=None``), and ``Σ_k (∂y_c/∂x_k)²``
    with ``squares``.

    ``rows(k0, k1)`` returns copies ``k0 … k1−1`` as one ((k1 − k0)·B, 3, H, W)
    tensor, copy-major; each forward/backward takes ``max(1, rows_per_chunk // B)``
    copies. Logits are checked at each forward and gradients for NaN/inf.
    """
    batch = len(targets)
    per = _steps_per_chunk(rows_per_chunk, batch, steps)
    total = squares_total = None
    for k0 in range(0, steps, per):
        k1 = min(steps, k0 + per)
        x = rows(k0, k1).detach().requires_grad_(True)
        chunk_targets = targets.repeat(k1 - k0)
        with torch.enable_grad():
            logits = model(x)
            check_logits(logits, chunk_targets)
            score = logits.gather(1, chunk_targets.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(score, x)
        check_gradients(grad)
        grad = grad.view(k1 - k0, batch, *grad.shape[1:]).double()
        part = (
            grad.sum(0) if weights is None else torch.einsum("k,kbchw->bchw", weights[k0:k1], grad)
        )
        total = part if total is None else total + part
        if squares:
            sq = grad.square().sum(0)
            squares_total = sq if squares_total is None else squares_total + sq
    assert total is not None
    return total, squares_total


def _scores(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, score: str) -> torch.Tensor:
    logits = model(x)
    check_logits(logits, targets)
    if score == "probability":
        logits = logits.softmax(1)
    return logits.gather(1, targets.view(-1, 1)).squeeze(1)


def chunked_scores(
    model: nn.Module,
    rows: Callable[[int, int], torch.Tensor],
    steps: int,
    targets: torch.Tensor,
    score: str,
    rows_per_chunk: int,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """``(k0, k1, s)`` per chunk: ``s`` (k1 − k0, B) the target's ``score`` (``logit``
    or softmax ``probability``) of copies ``k0 … k1−1`` (``rows`` as in
    :func:`gradient_sum`); forward only, no autograd graph."""
    batch = len(targets)
    per = _steps_per_chunk(rows_per_chunk, batch, steps)
    for k0 in range(0, steps, per):
        k1 = min(steps, k0 + per)
        with torch.no_grad():
            s = _scores(model, rows(k0, k1), targets.repeat(k1 - k0), score)
        yield k0, k1, s.view(k1 - k0, batch)


def target_score(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, score: str
) -> torch.Tensor:
    """(B,) the target's logit or probability for the unperturbed images."""
    with torch.no_grad():
        return _scores(model, images, targets, score)


# --- masks ------------------------------------------------------------------------------


def rise_draws(
    start: int,
    stop: int,
    size: tuple[int, int],
    cell_size: int,
    p: float,
    seed: int,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The random part of RISE masks ``start … stop−1``: binary grids
    (n, ⌈H/C⌉, ⌈W/C⌉), each cell 1 with probability ``p``, and shifts (n, 2) ``(dy, dx)``
    uniform in ``[0, C)²`` (``C = cell_size``). A hash of ``seed`` and the mask's index
    (no generator state): the same on any device, any range drawn alone."""
    h, w = size
    gh, gw = -(-h // cell_size), -(-w // cell_size)
    per_mask = gh * gw + 2
    index = torch.arange(start, stop, device=device)
    counters = (index.view(-1, 1) * per_mask + torch.arange(per_mask, device=device)).flatten()
    key = seed_key(0, seed).to(device).view(1)
    u = _uniform(key, counters, torch.float64).view(stop - start, per_mask)
    grids = (u[:, : gh * gw] < p).float().view(-1, gh, gw)
    shifts = (u[:, gh * gw :] * cell_size).long().clamp_(max=cell_size - 1)
    return grids, shifts


def rise_masks(
    start: int,
    stop: int,
    size: tuple[int, int],
    cell_size: int,
    p: float,
    seed: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """RISE masks ``start … stop−1`` (stop − start, H, W) in [0, 1] (Petsiuk et al. 2018).

    Mask ``i``: the grid of :func:`rise_draws` (cells of ``C = cell_size`` pixels,
    each kept with probability ``p``) bilinearly upsampled (half-pixel centres, edges
    clamped) to ``(⌈H/C⌉ + 1)·C × (⌈W/C⌉ + 1)·C`` and cropped to H × W at its shift
    ``(dy, dx)``. All masks of the range in one batched operation.

    >>> m = rise_masks(0, 100, (32, 32), 8, 0.5, seed=0)
    >>> tuple(m.shape), 0.4 < float(m.mean()) < 0.6
    ((100, 32, 32), True)
    >>> m[3:5].equal(rise_masks(3, 5, (32, 32), 8, 0.5, seed=0))
    True
    """
    h, w = size
    grids, shifts = rise_draws(start, stop, size, cell_size, p, seed, device)
    n, gh, gw = grids.shape
    up = F.interpolate(
        grids.to(dtype).unsqueeze(1),
        size=((gh + 1) * cell_size, (gw + 1) * cell_size),
        mode="bilinear",
        align_corners=False,
    ).squeeze(1)
    rows = shifts[:, :1] + torch.arange(h, device=device)  # (n, H)
    cols = shifts[:, 1:] + torch.arange(w, device=device)  # (n, W)
    return up[torch.arange(n, device=device).view(-1, 1, 1), rows[:, :, None], cols[:, None, :]]


def occlusion_windows(
    length: int, window: int, stride: int, device: torch.device | str
) -> torch.Tensor:
    """(n, length) 0/1 rows: window ``i`` covers ``[i·stride, i·stride + window)``
    clipped to the image, ``n = ⌈(length − window)/stride⌉ + 1`` (the last window
    reaches the border, as Captum's)."""
    n = -(-(length - window) // stride) + 1
    starts = torch.arange(n, device=device).view(-1, 1) * stride
    position = torch.arange(length, device=device).view(1, -1)
    return ((position >= starts) & (position < starts + window)).float()
