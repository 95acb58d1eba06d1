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

The linear system is solved exactly, not iteratively: block elimination over the image
rows (the matrix is block tridiagonal in row-major order), H steps of W × W dense
factorizations batched over every image and percentage on the images' device, the
channels as right-hand sides; float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cambench.data.degrade import salience_order
from cambench.metrics.draws import hash_normal, model_output

__all__ = [
    "DEFAULT_PERCENTAGES",
    "ORDERS",
    "Road",
    "noisy_linear_imputation",
    "road",
    "road_removed",
]

#: The paper's removal percentages (10 %, 20 %, …, 90 %).
DEFAULT_PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


#: The two removal orders: most relevant first, least relevant first.
ORDERS = ("morf", "lerf")


@dataclass
class Road:
    """Per-image ROAD curves (B, P) over ``percentages`` (P,) and their means (B,);
    a curve that was not asked for (``orders`` of :func:`road`) is None."""

    percentages: torch.Tensor
    morf_curve: torch.Tensor | None
    lerf_curve: torch.Tensor | None

    @property
    def morf(self) -> torch.Tensor:
        return _computed(self.morf_curve, "morf").mean(dim=1)

    @property
    def lerf(self) -> torch.Tensor:
        return _computed(self.lerf_curve, "lerf").mean(dim=1)

    @property
    def gap(self) -> torch.Tensor:
        return self.lerf - self.morf


def _computed(curve: torch.Tensor | None, order: str) -> torch.Tensor:
    if curve is None:
        raise ValueError(f"the ROAD {order.upper()} curve was not computed (road(orders=...))")
    return curve


def _coefficients(
    missing: torch.Tensor, direct: float, diagonal: float
) -> tuple[torch.Tensor, ...]:
    """The system matrix's non-zeros, each (N, H, W) float64 at pixel (r, c): the
    diagonal (``s_i`` at removed pixels, 1 at known ones: identity rows) and the
    couplings to the left (r, c-1), upper (r-1, c), upper-left and upper-right
    neighbours (``-w`` where both pixels are removed, 0 otherwise; symmetric)."""
    n_sys, h, w = missing.shape
    miss = missing.double()
    kernel = torch.tensor(
        [[diagonal, direct, diagonal], [direct, 0.0, direct], [diagonal, direct, diagonal]],
        dtype=torch.float64,
        device=missing.device,
    )
    ones = torch.ones(1, 1, h, w, dtype=torch.float64, device=missing.device)
    s = torch.nn.functional.conv2d(ones, kernel[None, None], padding=1)[0, 0]
    diag = torch.where(missing, s, 1.0)
    left = torch.zeros_like(miss)
    left[:, :, 1:] = -direct * miss[:, :, 1:] * miss[:, :, :-1]
    up = torch.zeros_like(miss)
    up[:, 1:] = -direct * miss[:, 1:] * miss[:, :-1]
    up_left = torch.zeros_like(miss)
    up_left[:, 1:, 1:] = -diagonal * miss[:, 1:, 1:] * miss[:, :-1, :-1]
    up_right = torch.zeros_like(miss)
    up_right[:, 1:, :-1] = -diagonal * miss[:, 1:, :-1] * miss[:, :-1, 1:]
    return diag, left, up, up_left, up_right


def _shifted_rows(
    centre: torch.Tensor, left: torch.Tensor, right: torch.Tensor, m: torch.Tensor
) -> torch.Tensor:
    """``T m`` for the (N, W, W) tridiagonal ``T`` given by its rows' coefficients
    (N, W) on its diagonal, left of it and right of it, ``m`` (N, W, K): row c is
    ``centre[c] m[c] + left[c] m[c - 1] + right[c] m[c + 1]`` (O(W·K), not a product)."""
    out = centre[..., None] * m
    out[:, 1:] += left[:, 1:, None] * m[:, :-1]
    out[:, :-1] += right[:, :-1, None] * m[:, 1:]
    return out


def _block_solve(coefficients: tuple[torch.Tensor, ...], rhs: torch.Tensor) -> torch.Tensor:
    """Solve ``A x = rhs`` for the symmetric positive definite (N, H·W, H·W) systems of
    :func:`_coefficients`, ``rhs`` (N, H, W, C), by block elimination over image rows.

    In row-major order ``A`` is block tridiagonal: diagonal blocks ``D_r`` (the row's
    own W × W tridiagonal couplings) and tridiagonal sub-diagonal blocks ``E_r`` (row r
    to row r - 1: ``E_r[c, c'] = A[(r, c), (r - 1, c')]``). Forward, with
    ``P_r = S_r^{-1}`` (Cholesky, then its inverse):
    ``S_0 = D_0, g_0 = b_0``; ``S_r = D_r - E_r P_{r-1} E_r^T``,
    ``g_r = b_r - E_r P_{r-1} g_{r-1}``; back: ``x_{H-1} = P_{H-1} g_{H-1}``,
    ``x_r = P_r (g_r - E_{r+1}^T x_{r+1})``. ``E_r`` multiplies as shifted rows
    (:func:`_shifted_rows`), so a row costs one W × W factorization and inversion,
    batched over every image and percentage, the channels as right-hand sides; float64,
    exact up to rounding. Fewer operations per row than factoring ``S_r`` and solving
    with its triangle for ``E_r^T``: 1.0-1.1x faster at 32-128 px, 1.4x at 224 px (353
    against 502 ms per 3-channel system, one thread; ``benchmarks/road_imputation.py``)."""
    diag, left, up, up_left, up_right = (t.transpose(0, 1) for t in coefficients)  # (H, N, W)
    h, n_sys, w = diag.shape
    b = rhs.transpose(0, 1)  # (H, N, W, C)
    inverses = diag.new_empty(h, n_sys, w, w)
    g = torch.empty_like(b)
    g[0] = b[0]
    schur = diag.new_zeros(n_sys, w, w)
    for r in range(h):
        schur.zero_()
        schur.diagonal(dim1=1, dim2=2).copy_(diag[r])
        schur.diagonal(offset=-1, dim1=1, dim2=2).copy_(left[r, :, 1:])  # the lower triangle
        if r > 0:
            e_p = _shifted_rows(up[r], up_left[r], up_right[r], inverses[r - 1])
            schur -= _shifted_rows(up[r], up_left[r], up_right[r], e_p.transpose(1, 2))
            g[r] = torch.baddbmm(b[r], e_p, g[r - 1], alpha=-1)
        factor = torch.linalg.cholesky_ex(schur)[0]  # reads the lower triangle
        inverses[r] = torch.cholesky_inverse(factor)
    x = torch.empty_like(b)
    x[h - 1] = torch.bmm(inverses[h - 1], g[h - 1])
    for r in range(h - 2, -1, -1):
        # E_{r+1}^T x_{r+1}: the transposed tridiagonal's rows are the columns of E
        e_t = _shifted_rows(
            up[r + 1],
            torch.nn.functional.pad(up_right[r + 1, :, :-1], (1, 0)),
            torch.nn.functional.pad(up_left[r + 1, :, 1:], (0, 1)),
            x[r + 1],
        )
        x[r] = torch.bmm(inverses[r], g[r] - e_t)
    return x.transpose(0, 1)


def _neighbour_sum(values: torch.Tensor, direct: float, diagonal: float) -> torch.Tensor:
    """(..., H, W): each pixel's weighted sum of its eight neighbours inside the image
    (zero padding), as shifted slices (a float64 conv2d is slow on CPU)."""
    h, w = values.shape[-2:]
    padded = torch.nn.functional.pad(values, (1, 1, 1, 1))
    direct_sum = (
        padded[..., :h, 1 : w + 1]
        + padded[..., 2:, 1 : w + 1]
        + padded[..., 1 : h + 1, :w]
        + padded[..., 1 : h + 1, 2:]
    )
    diagonal_sum = (
        padded[..., :h, :w] + padded[..., :h, 2:] + padded[..., 2:, :w] + padded[..., 2:, 2:]
    )
    return direct * direct_sum + diagonal * diagonal_sum


def _right_hand_side(
    images: torch.Tensor, missing: torch.Tensor, direct: float, diagonal: float
) -> torch.Tensor:
    """(N, H, W, C): the known neighbours' weighted sum at removed pixels, the image's
    value at known ones."""
    y = images.double()
    known = (~missing).double()[:, None]
    nb = _neighbour_sum(y * known, direct, diagonal)
    rhs = torch.where(missing[:, None], nb, y)
    return rhs.permute(0, 2, 3, 1)


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
    coefficients = _coefficients(missing, direct, diagonal)
    rhs = _right_hand_side(images, missing, direct, diagonal)
    # chunks of systems: the inverses and right-hand sides take H · W · (W + 2 C) float64
    chunk = max(1, int(64 * 2**20 // (h * w * (w + 2 * c) * 8)))
    parts = [
        _block_solve(
            tuple(t[start : start + chunk] for t in coefficients), rhs[start : start + chunk]
        )
        for start in range(0, n_sys, chunk)
    ]
    solved = torch.cat(parts).permute(0, 3, 1, 2)
    if noise is not None:
        solved = solved + torch.where(missing[:, None], noise.double(), 0.0)
    return torch.where(missing[:, None], solved, images.double()).to(images.dtype)


def road_removed(
    maps: torch.Tensor, index: torch.Tensor, percentage: float, most_relevant: bool, seed: int
) -> torch.Tensor:
    """(B, H, W) bool: the ``floor(H·W·percentage/100)`` most (or least) relevant
    pixels of each map, equal values in the seeded order of
    :func:`cambench.data.degrade.salience_order`."""
    order = salience_order(maps, index, seed)
    return _removed(order, percentage, most_relevant).reshape(maps.shape)


def _removed(order: torch.Tensor, percentage: float, most_relevant: bool) -> torch.Tensor:
    """(B, n) bool from the salience ``order`` (B, n) of :func:`road_removed`."""
    b, n = order.shape
    k = int(n * float(percentage) / 100)
    chosen = order[:, :k] if most_relevant else order[:, n - k :]
    removed = torch.zeros(b, n, dtype=torch.bool, device=order.device)
    removed.scatter_(1, chosen, True)
    return removed


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
    orders: Sequence[str] = ORDERS,
) -> Road:
    """ROAD MoRF and LeRF curves of each image (see the module docstring).

    ``images`` (B, C, H, W), ``targets`` (B,), ``maps`` (B, H, W), ``index`` (B,): the
    images' positions in their split (the seed of their tie order and noise).
    ``orders``: the curves to compute, ``"morf"`` and / or ``"lerf"``; each costs
    ``len(percentages)`` imputations and forwards per image, and the one left out is
    None (a curve's values do not depend on whether the other is computed).

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
    if not orders or any(o not in ORDERS for o in orders):
        raise ValueError(f"orders must be a non-empty subset of {ORDERS}, got {list(orders)}")
    b, c, h, w = images.shape
    curves: dict[str, torch.Tensor] = {}
    n_p = len(percentages)
    order = salience_order(maps, index, seed)
    for name, most in (("morf", True), ("lerf", False)):
        if name not in orders:
            continue
        # every percentage's removed pixels and noise, image-major (B·P systems)
        missing = torch.stack([_removed(order, p, most) for p in percentages], dim=1).reshape(
            b * n_p, h, w
        )
        z = torch.stack(
            [hash_normal(index, c * h * w, seed, 2 * k + (0 if most else 1)) for k in range(n_p)],
            dim=1,
        ).reshape(b * n_p, c, h, w)
        repeated = images.repeat_interleave(n_p, dim=0)
        imputed = noisy_linear_imputation(repeated, missing, float(noise) * z, weights)
        values = model_output(model, imputed, targets.repeat_interleave(n_p), score, batch_size)
        curves[name] = values.reshape(b, n_p)
    return Road(
        torch.tensor([float(p) for p in percentages]), curves.get("morf"), curves.get("lerf")
    )
