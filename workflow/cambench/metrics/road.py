r"""ROAD: RemOve And Debias (Rong et al., ICML 2022), without retraining.

`"A Consistent and Efficient Evaluation Strategy for Attribution Methods"
<https://arxiv.org/abs/2202.00449>`_. A fraction :math:`p` of the pixels is removed,
the most relevant first (MoRF) or the least relevant first (LeRF), and replaced by
*noisy linear imputation*: each removed pixel :math:`i` takes the weighted mean of
its eight neighbours,

.. math::
    s_i\, x_i - \sum_{j \in N(i)\cap M} w_{ij}\, x_j = \sum_{j \in N(i)\setminus M} w_{ij}\, y_j,
    \qquad s_i = \sum_{j \in N(i)} w_{ij},

(:math:`M` the removed pixels, :math:`y` the image, :math:`w` = 1/6 for the four
direct and 1/12 for the four diagonal neighbours, :math:`N(i)` the neighbours inside
the image), solved jointly for all removed pixels and channels, plus Gaussian noise
of standard deviation ``noise``. The model then scores each imputed image: whether it
still predicts the target (``score="accuracy"``, the paper's measure) or the target's
softmax probability (``"probability"``, as pytorch-grad-cam's ROAD classes).

Per image the curves over ``percentages`` and their means: ``morf`` (lower is
better), ``lerf`` (higher is better) and ``gap = lerf - morf`` (higher is better).

The removed pixels are the ``floor(H·W·p/100)`` first (MoRF) or last (LeRF) of the
map's order, equal values ordered by a seeded hash (:func:`cambench.data.degrade.salience_order`);
the noise of pixel :math:`q`, channel :math:`c` is :func:`cambench.metrics.draws.hash_normal`
of the image's split position, stream ``2 * k + (0 MoRF, 1 LeRF)`` for the ``k``-th
percentage, element ``c·H·W + q``: independent of the batch.

The linear system is solved exactly (banded Cholesky in float64, batched on the
images' device; bandwidth W + 1 in row-major order), not iteratively.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cambench.data.degrade import salience_order
from cambench.metrics.draws import hash_normal, model_output

__all__ = [
    "DEFAULT_PERCENTAGES",
    "Road",
    "noisy_linear_imputation",
    "road",
    "road_removed",
]

#: The paper's removal percentages (10 %, 20 %, …, 90 %).
DEFAULT_PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)

# (row offset, column offset) of the four lower-band neighbours in row-major order
# (j < i) and whether each is a direct (True) or a diagonal neighbour.
_LOWER = ((0, -1, True), (-1, 1, False), (-1, 0, True), (-1, -1, False))


@dataclass
class Road:
    """Per-image ROAD curves (B, P) over ``percentages`` (P,) and their means (B,)."""

    percentages: torch.Tensor
    morf_curve: torch.Tensor
    lerf_curve: torch.Tensor

    @property
    def morf(self) -> torch.Tensor:
        return self.morf_curve.mean(dim=1)

    @property
    def lerf(self) -> torch.Tensor:
        return self.lerf_curve.mean(dim=1)

    @property
    def gap(self) -> torch.Tensor:
        return self.lerf - self.morf


def _band(missing: torch.Tensor, direct: float, diagonal: float) -> torch.Tensor:
    """(N, n, W + 2) lower band of the system matrix over all n = H·W pixels:
    ``band[:, i, d] = A[i, i - d]``; known pixels are identity rows."""
    n_sys, h, w = missing.shape
    n = h * w
    m = w + 1
    band = torch.zeros(n_sys, n, m + 1, dtype=torch.float64, device=missing.device)
    miss = missing.double()
    # s_i: the weights of the neighbours inside the image (zero-padded 3x3 sum)
    kernel = torch.tensor(
        [[diagonal, direct, diagonal], [direct, 0.0, direct], [diagonal, direct, diagonal]],
        dtype=torch.float64,
        device=missing.device,
    )
    ones = torch.ones(1, 1, h, w, dtype=torch.float64, device=missing.device)
    s = torch.nn.functional.conv2d(ones, kernel[None, None], padding=1)[0, 0]
    band[:, :, 0] = torch.where(missing, s, 1.0).reshape(n_sys, n)
    for dr, dc, is_direct in _LOWER:
        weight = direct if is_direct else diagonal
        both = torch.zeros_like(miss)
        rows = slice(max(0, -dr), h)
        src_rows = slice(max(0, -dr) + dr, h + dr)
        cols = slice(max(0, -dc), min(w, w - dc))
        src_cols = slice(max(0, -dc) + dc, min(w, w - dc) + dc)
        both[:, rows, cols] = miss[:, rows, cols] * miss[:, src_rows, src_cols]
        band[:, :, -dr * w - dc] = (-weight * both).reshape(n_sys, n)
    return band


def _right_hand_side(
    images: torch.Tensor, missing: torch.Tensor, direct: float, diagonal: float
) -> torch.Tensor:
    """(N, n, C): the known neighbours' weighted sum at removed pixels, the image's
    value at known ones."""
    y = images.double()
    known = (~missing).double()[:, None]
    kernel = torch.tensor(
        [[diagonal, direct, diagonal], [direct, 0.0, direct], [diagonal, direct, diagonal]],
        dtype=torch.float64,
        device=images.device,
    )
    c = y.shape[1]
    nb = torch.nn.functional.conv2d(
        (y * known).reshape(-1, 1, *y.shape[2:]), kernel[None, None], padding=1
    ).reshape(y.shape)
    rhs = torch.where(missing[:, None], nb, y)
    return rhs.flatten(2).transpose(1, 2).reshape(y.shape[0], -1, c)


def _banded_solve(band: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve the symmetric positive definite banded systems ``A x = rhs``: ``band``
    (N, n, m + 1) the lower band (``band[:, i, d] = A[i, i - d]``), ``rhs`` (N, n, C).
    Right-looking Cholesky in place on the rows' upper band (``G[:, i, e] = A[i, i + e]``,
    overwritten by the factor), forward substitution alongside, then back
    substitution; float64."""
    n_sys, n, width = band.shape
    m = width - 1
    dev = band.device
    # rows' upper band, padded with m + 1 identity rows so every update is in range
    g = torch.zeros(n_sys, n + m + 1, width, dtype=torch.float64, device=dev)
    g[:, n:, 0] = 1.0
    for e in range(width):
        g[:, : n - e, e] = band[:, e:, e]
    b = torch.zeros(n_sys, n + m + 1, rhs.shape[2], dtype=torch.float64, device=dev)
    b[:, :n] = rhs
    # update[t, e] = l[t] * l[t + e] for t + e < m (zero beyond: l padded with zeros)
    t = torch.arange(m, device=dev)
    pair = (t[:, None] + t[None, :]).clamp(max=m)
    padded = torch.zeros(n_sys, m + 1, dtype=torch.float64, device=dev)
    for j in range(n):
        row = g[:, j]
        row[:, 0].sqrt_()
        row[:, 1:] /= row[:, :1]
        col = row[:, 1:]  # L[j + 1 + t, j]
        b[:, j] /= row[:, :1]
        padded[:, :m] = col
        g[:, j + 1 : j + 1 + m, :m] -= col[:, :, None] * padded[:, pair]
        b[:, j + 1 : j + 1 + m] -= col[:, :, None] * b[:, j, None, :]
    x = torch.zeros_like(b)
    for j in range(n - 1, -1, -1):
        following = (g[:, j, 1:, None] * x[:, j + 1 : j + 1 + m]).sum(dim=1)
        x[:, j] = (b[:, j] - following) / g[:, j, :1]
    return x[:, :n]


def noisy_linear_imputation(
    images: torch.Tensor,
    missing: torch.Tensor,
    noise: torch.Tensor | None = None,
    weights: tuple[float, float] = (1 / 6, 1 / 12),
) -> torch.Tensor:
    """Images (N, C, H, W) with the ``missing`` pixels (N, H, W bool) replaced by the
    weighted mean of their neighbours (``weights``: direct, diagonal), solved jointly
    per image, plus ``noise`` (N, C, H, W, already scaled) at the removed pixels.

    Example::
        >>> import torch
        >>> from cambench.metrics.road import noisy_linear_imputation
        >>> image = torch.arange(9.0).reshape(1, 1, 3, 3)  # a linear ramp
        >>> missing = torch.zeros(1, 3, 3, dtype=torch.bool)
        >>> missing[0, 1, 1] = True
        >>> noisy_linear_imputation(image, missing)[0, 0, 1, 1]  # the neighbours' mean
        tensor(4.)
    """
    n_sys, c, h, w = images.shape
    if missing.shape != (n_sys, h, w):
        raise ValueError(f"missing must be {(n_sys, h, w)}, got {tuple(missing.shape)}")
    direct, diagonal = (float(v) for v in weights)
    band = _band(missing, direct, diagonal)
    rhs = _right_hand_side(images, missing, direct, diagonal)
    # chunks of systems: the factor takes N · H·W · (W + 1) float64
    per_system = h * w * (w + 2) * 8 * 2
    chunk = max(1, int(256 * 2**20 // per_system))
    out = torch.empty(n_sys, h * w, c, dtype=torch.float64, device=images.device)
    for start in range(0, n_sys, chunk):
        out[start : start + chunk] = _banded_solve(
            band[start : start + chunk], rhs[start : start + chunk]
        )
    solved = out.transpose(1, 2).reshape(n_sys, c, h, w)
    if noise is not None:
        solved = solved + torch.where(missing[:, None], noise.double(), 0.0)
    return torch.where(missing[:, None], solved, images.double()).to(images.dtype)


def road_removed(
    maps: torch.Tensor, index: torch.Tensor, percentage: float, most_relevant: bool, seed: int
) -> torch.Tensor:
    """(B, H, W) bool: the ``floor(H·W·percentage/100)`` most (or least) relevant
    pixels of each map, equal values in the seeded order of
    :func:`cambench.data.degrade.salience_order`."""
    b, h, w = maps.shape
    n = h * w
    k = int(n * float(percentage) / 100)
    order = salience_order(maps, index, seed)
    chosen = order[:, :k] if most_relevant else order[:, n - k :]
    removed = torch.zeros(b, n, dtype=torch.bool, device=maps.device)
    removed.scatter_(1, chosen, True)
    return removed.reshape(b, h, w)


def road(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    maps: torch.Tensor,
    index: torch.Tensor,
    percentages: Sequence[float] = DEFAULT_PERCENTAGES,
    noise: float = 0.01,
    weights: tuple[float, float] = (1 / 6, 1 / 12),
    score: str = "accuracy",
    seed: int = 0,
    batch_size: int = 512,
) -> Road:
    """ROAD MoRF and LeRF curves of each image (see the module docstring).

    ``images`` (B, C, H, W), ``targets`` (B,), ``maps`` (B, H, W), ``index`` (B,): the
    images' positions in their split (the seed of their tie order and noise).

    Example::
        >>> import torch
        >>> from cambench.metrics.road import road
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64, 2))
        >>> images, maps = torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8)
        >>> out = road(model, images, torch.tensor([0, 1]), maps, torch.arange(2),
        ...            percentages=(20, 50), score="probability")
        >>> out.morf_curve.shape, out.gap.shape
        (torch.Size([2, 2]), torch.Size([2]))
    """
    if images.ndim != 4 or maps.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(
            f"images must be (B, C, H, W) and maps (B, H, W), got {tuple(images.shape)} "
            f"and {tuple(maps.shape)}"
        )
    if not percentages or any(not 0 < float(p) < 100 for p in percentages):
        raise ValueError(f"percentages must lie in (0, 100), got {list(percentages)}")
    b, c, h, w = images.shape
    curves = []
    n_p = len(percentages)
    for most in (True, False):
        # every percentage's removed pixels and noise, image-major (B·P systems)
        missing = torch.stack(
            [road_removed(maps, index, p, most, seed) for p in percentages], dim=1
        ).reshape(b * n_p, h, w)
        z = torch.stack(
            [hash_normal(index, c * h * w, seed, 2 * k + (0 if most else 1)) for k in range(n_p)],
            dim=1,
        ).reshape(b * n_p, c, h, w)
        repeated = images.repeat_interleave(n_p, dim=0)
        imputed = noisy_linear_imputation(repeated, missing, float(noise) * z, weights)
        values = model_output(model, imputed, targets.repeat_interleave(n_p), score, batch_size)
        curves.append(values.reshape(b, n_p))
    return Road(torch.tensor([float(p) for p in percentages]), curves[0], curves[1])
