"""Statistics for the summary tables: percentile bootstrap confidence intervals of
means (per image, vectorized), the paired Wilcoxon signed-rank test, and the average
ranks shared by the Wilcoxon test and the Spearman correlation of the randomization
test.

numpy, without scipy; the ranks are one batched torch function (:func:`average_ranks`)
for both callers, whose data are numpy vectors and (B, N) tensors of maps.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_RESAMPLES",
    "average_ranks",
    "bootstrap_means",
    "bootstrap_mean_ci",
    "wilcoxon_signed_rank",
]

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
#: Largest number of values held at once by the resampling (resamples x images x columns).
_BLOCK_VALUES = 8_000_000
#: Exact null distribution of the signed-rank statistic up to this many pairs (as scipy).
EXACT_MAX_N = 50


def bootstrap_means(
    values: np.ndarray, resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> np.ndarray:
    """Means of ``resamples`` bootstrap resamples of the rows of ``values``.

    ``values``: (n,) or (n, k) — n images (the resampled unit), k metrics; every
    resample draws n rows with replacement (the same rows for every column, so the
    columns' intervals are consistent). NaN entries are skipped within each resample
    (``nanmean``). Returns (resamples,) or (resamples, k). Deterministic for a given
    ``seed``; memory is bounded by resampling in blocks.
    """
    values = np.asarray(values, dtype=float)
    squeeze = values.ndim == 1
    if squeeze:
        values = values[:, None]
    if values.ndim != 2:
        raise ValueError(f"values must be (n,) or (n, k), got shape {values.shape}")
    n, k = values.shape
    if isinstance(resamples, bool) or int(resamples) < 1:
        raise ValueError(f"resamples must be a positive integer, got {resamples!r}")
    resamples = int(resamples)
    out = np.full((resamples, k), np.nan)
    if n == 0:
        return out[:, 0] if squeeze else out
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    finite = np.isfinite(values)
    clean = np.where(finite, values, 0.0)
    block = max(1, _BLOCK_VALUES // max(1, n * k))
    for start in range(0, resamples, block):
        rows = idx[start : start + block]
        sums = clean[rows].sum(axis=1)  # (block, k)
        counts = finite[rows].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + block] = np.where(counts > 0, sums / counts, np.nan)
    return out[:, 0] if squeeze else out


def bootstrap_mean_ci(
    values: np.ndarray,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Mean and percentile-bootstrap confidence interval of the mean, per column, as
    described in `"Bootstrap Methods: Another Look at the Jackknife"
    <https://doi.org/10.1214/aos/1176344552>`_ (Efron, Annals of Statistics 1979).

    For the values :math:`v_1 \dots v_n` of one metric over :math:`n` images and
    :math:`B` = ``resamples`` resamples of the images drawn with replacement
    (indices :math:`j_{b,1} \dots j_{b,n}`, seeded):

    .. math::
        \bar v^*_b = \frac{1}{n} \sum_{i=1}^n v_{j_{b,i}}, \qquad
        \mathrm{CI} = \big[q_{\alpha/2}(\bar v^*), \; q_{1-\alpha/2}(\bar v^*)\big]

    where :math:`q_u` is the :math:`u`-quantile of the :math:`B` resampled means and
    :math:`\alpha = 1 -` ``confidence``. The images are the resampled unit: the
    columns of one row are drawn together (see :func:`bootstrap_means`).

    ``values`` (n,) or (n, k); NaN values are ignored (a column's mean is over its
    finite values). Returns ``(mean, low, high)``, each a float for 1-d input or a
    (k,) array: ``low``/``high`` are the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` quantiles of the resampled means (Efron's percentile
    interval). A column with fewer than two finite values has a NaN interval.

    Example::
        >>> import numpy as np
        >>> from cambench.metrics import bootstrap_mean_ci
        >>> mean, low, high = bootstrap_mean_ci(np.array([1.0, 2.0, 3.0, 4.0]), seed=0)
        >>> mean, bool(1.0 <= low < mean < high <= 4.0)
        (2.5, True)
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    values = np.asarray(values, dtype=float)
    squeeze = values.ndim == 1
    table = values[:, None] if squeeze else values
    finite = np.isfinite(table)
    counts = finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, np.where(finite, table, 0.0).sum(axis=0) / counts, np.nan)
    means = bootstrap_means(table, resamples, seed)
    alpha = (1.0 - confidence) / 2
    low = np.full(table.shape[1], np.nan)
    high = np.full(table.shape[1], np.nan)
    ok = counts >= 2
    if ok.any():
        low[ok], high[ok] = np.nanquantile(means[:, ok], [alpha, 1 - alpha], axis=0)
    if squeeze:
        return float(mean[0]), float(low[0]), float(high[0])
    return mean, low, high


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..N along the last dimension of (B, N) ``x``, float64; ties share their
    average rank (the "average" method of ``scipy.stats.rankdata``), so that a map
    with many equal pixels is ranked without an arbitrary order.

    Example::
        >>> import torch
        >>> from cambench.metrics.statistics import average_ranks
        >>> average_ranks(torch.tensor([[0.5, 0.1, 0.5, 0.9]]))
        tensor([[2.5000, 1.0000, 2.5000, 4.0000]], dtype=torch.float64)
    """
    if x.ndim != 2:
        raise ValueError(f"x must be (B, N), got shape {tuple(x.shape)}")
    b, n = x.shape
    values, order = torch.sort(x, dim=1, stable=True)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    group = starts.long().cumsum(dim=1) - 1  # tie group of each sorted position
    pos = torch.arange(n, device=x.device).expand(b, n)
    first = torch.full((b, n), n, device=x.device, dtype=torch.long)
    first = first.scatter_reduce(1, group, pos, reduce="amin")
    last = torch.full((b, n), -1, device=x.device, dtype=torch.long)
    last = last.scatter_reduce(1, group, pos, reduce="amax")
    mean_rank = (first.gather(1, group) + last.gather(1, group)).double() / 2 + 1
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def _exact_signed_rank_cdf(n: int) -> np.ndarray:
    """Counts of subsets of {1..n} by sum: the null distribution of W+ (untied)."""
    counts = np.zeros(n * (n + 1) // 2 + 1, dtype=np.float64)
    counts[0] = 1.0
    for r in range(1, n + 1):
        counts[r:] = counts[r:] + counts[:-r].copy()
    return counts


def wilcoxon_signed_rank(differences: np.ndarray) -> tuple[float, float, int]:
    r"""Two-sided paired Wilcoxon signed-rank test of ``differences`` (x - y per pair),
    as described in `"Individual Comparisons by Ranking Methods"
    <https://doi.org/10.2307/3001968>`_ (Wilcoxon, Biometrics Bulletin 1945).

    For the :math:`n` non-zero differences :math:`d_i` with :math:`R_i` the rank of
    :math:`|d_i|` among them:

    .. math::
        W^+ = \sum_{d_i > 0} R_i, \qquad W^- = \sum_{d_i < 0} R_i, \qquad
        W = \min(W^+, W^-), \qquad
        z = \frac{W - n(n+1)/4}{\sqrt{\mathrm{var}}}

    (:math:`z` only for the normal approximation below). Agrees with
    ``scipy.stats.wilcoxon`` with its defaults.

    Zero differences are dropped (Wilcoxon's convention, scipy's default
    ``zero_method="wilcox"``); tied absolute differences share their average rank.
    The statistic is ``W = min(W+, W-)``. The p-value is exact (the null distribution
    of W+ counted over all sign patterns) when at most :data:`EXACT_MAX_N` non-zero
    pairs remain and their absolute values have no ties; otherwise it is the normal
    approximation with the tie correction of the variance,
    ``var = n(n+1)(2n+1)/24 - Σ(t³ - t)/48``, without continuity correction (scipy's
    defaults, ``method="auto"``). NaN pairs are dropped. With no non-zero pair the
    samples do not differ: ``p = 1``.

    Returns ``(W, p, n)`` with ``n`` the number of non-zero pairs used.

    Example::
        >>> from cambench.metrics import wilcoxon_signed_rank
        >>> wilcoxon_signed_rank([1.0, 2.0, 3.0, -4.0, 5.0])  # exact: 2 * 7 / 2**5
        (4.0, 0.4375, 5)
    """
    d = np.asarray(differences, dtype=float).ravel()
    d = d[np.isfinite(d)]
    d = d[d != 0]
    n = int(d.size)
    if n == 0:
        return 0.0, 1.0, 0
    ranks = average_ranks(torch.from_numpy(np.abs(d))[None])[0].numpy()
    w_plus = float(ranks[d > 0].sum())
    w_minus = float(ranks[d < 0].sum())
    w = min(w_plus, w_minus)
    total = n * (n + 1) / 2
    _, tie_counts = np.unique(np.abs(d), return_counts=True)
    has_ties = bool((tie_counts > 1).any())
    if n <= EXACT_MAX_N and not has_ties:
        counts = _exact_signed_rank_cdf(n)
        k = int(round(w))  # integer without ties
        p = 2.0 * counts[: k + 1].sum() / 2.0**n
        return w, float(min(1.0, p)), n
    mean = total / 2
    var = n * (n + 1) * (2 * n + 1) / 24 - float((tie_counts**3 - tie_counts).sum()) / 48
    if var <= 0:
        return w, 1.0, n
    z = (w - mean) / math.sqrt(var)
    p = math.erfc(abs(z) / math.sqrt(2))
    return w, float(min(1.0, p)), n
