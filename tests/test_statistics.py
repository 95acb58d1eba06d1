"""Tests of cambench.metrics.statistics: bootstrap intervals, the Wilcoxon test, average
ranks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cambench.metrics.statistics import (
    average_ranks,
    bootstrap_mean_ci,
    bootstrap_means,
    wilcoxon_signed_rank,
)

# ---------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize(
    ("name", "draw", "true_mean"),
    [
        ("normal", lambda rng, n: rng.normal(3.0, 2.0, n), 3.0),
        ("exponential", lambda rng, n: rng.exponential(1.0, n), 1.0),
        ("bernoulli", lambda rng, n: 100.0 * (rng.random(n) < 0.3), 30.0),
    ],
)
def test_bootstrap_interval_covers_the_true_mean_at_the_nominal_rate(name, draw, true_mean):
    # 300 synthetic experiments of 60 images each: a 95 % interval should cover the
    # true mean in about 95 % of them (the percentile bootstrap runs a little narrow
    # for skewed data at this size, so the band is [0.90, 0.99]).
    rng = np.random.default_rng(123)
    covered = 0
    for experiment in range(300):
        sample = draw(rng, 60)
        _, low, high = bootstrap_mean_ci(sample, resamples=1000, seed=experiment)
        covered += low <= true_mean <= high
    assert 0.90 <= covered / 300 <= 0.99, f"{name}: coverage {covered / 300:.3f}"


def test_bootstrap_interval_is_deterministic_and_ordered():
    values = np.random.default_rng(0).normal(size=(40, 3))
    first = bootstrap_mean_ci(values, seed=7)
    again = bootstrap_mean_ci(values, seed=7)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    mean, low, high = first
    np.testing.assert_allclose(mean, values.mean(axis=0))
    assert (low < mean).all() and (mean < high).all()
    other = bootstrap_mean_ci(values, seed=8)
    assert not np.array_equal(other[1], low)


def test_bootstrap_columns_share_resamples_and_skip_nan():
    values = np.column_stack([np.arange(10.0), np.arange(10.0)])
    values[3, 1] = np.nan
    means = bootstrap_means(values, resamples=50, seed=0)
    assert means.shape == (50, 2)
    mean, low, high = bootstrap_mean_ci(values)
    assert mean[0] == pytest.approx(4.5)
    assert mean[1] == pytest.approx(np.mean(np.delete(np.arange(10.0), 3)))
    assert np.isfinite(low).all() and np.isfinite(high).all()


def test_bootstrap_blocks_give_the_same_means(monkeypatch):
    import cambench.metrics.statistics as statistics

    values = np.random.default_rng(1).random((30, 2))
    whole = bootstrap_means(values, resamples=64, seed=3)
    monkeypatch.setattr(statistics, "_BLOCK_VALUES", 60)  # one resample per block
    np.testing.assert_allclose(bootstrap_means(values, resamples=64, seed=3), whole)


def test_bootstrap_degenerate_inputs():
    mean, low, high = bootstrap_mean_ci(np.array([5.0]))
    assert mean == 5.0 and math.isnan(low) and math.isnan(high)
    mean, low, high = bootstrap_mean_ci(np.array([np.nan, np.nan]))
    assert math.isnan(mean)
    assert bootstrap_mean_ci(np.full(20, 2.0)) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_mean_ci(np.ones(5), confidence=1.5)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_means(np.ones(5), resamples=0)


# ----------------------------------------------------------------------- Wilcoxon


def test_wilcoxon_exact_hand_computed():
    # all five differences positive: W- = 0, and only 1 of the 2^5 sign patterns
    # has W+ = 15 (or W- = 0): two-sided p = 2 / 32
    w, p, n = wilcoxon_signed_rank(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert (w, n) == (0.0, 5)
    assert p == pytest.approx(2 / 32)
    # W = 1 (only the smallest |d| negative): sign patterns with W- <= 1 are W- = 0
    # and W- = 1, so p = 2 * 2 / 32
    w, p, _ = wilcoxon_signed_rank(np.array([-1.0, 2.0, 3.0, 4.0, 5.0]))
    assert w == 1.0 and p == pytest.approx(4 / 32)


def test_wilcoxon_normal_approximation_with_ties_and_zeros_by_hand():
    # zeros are dropped: n = 6; |d| = 1 1 2 2 2 3 -> ranks 1.5 1.5 4 4 4 6
    d = np.array([0.0, 1.0, -1.0, 2.0, 2.0, 2.0, 3.0])
    w, p, n = wilcoxon_signed_rank(d)
    assert n == 6 and w == 1.5  # W- = 1.5, W+ = 19.5
    mean = 6 * 7 / 4
    var = 6 * 7 * 13 / 24 - ((2**3 - 2) + (3**3 - 3)) / 48
    z = (1.5 - mean) / math.sqrt(var)
    assert p == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-12)
    assert p == pytest.approx(0.05570, abs=5e-5)


def test_wilcoxon_edge_cases():
    assert wilcoxon_signed_rank(np.zeros(7)) == (0.0, 1.0, 0)
    assert wilcoxon_signed_rank(np.array([np.nan, 1.0]))[2] == 1
    _, p, _ = wilcoxon_signed_rank(np.array([1.0]))
    assert p == 1.0  # W- = 0 and W+ = 1 are equally likely: nothing is significant


@pytest.mark.parametrize("n", [8, 30, 49, 80, 200])
def test_wilcoxon_matches_scipy(n):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(n)
    d = rng.normal(0.2, 1.0, n)  # continuous: no ties, no zeros
    w, p, _ = wilcoxon_signed_rank(d)
    reference = stats.wilcoxon(d)
    assert w == pytest.approx(reference.statistic)
    assert p == pytest.approx(reference.pvalue, rel=1e-9)
    tied = np.round(rng.normal(0.3, 1.0, n) * 2) / 2  # ties and zeros: approximation
    w, p, _ = wilcoxon_signed_rank(tied)
    reference = stats.wilcoxon(tied, method="approx")
    assert w == pytest.approx(reference.statistic)
    assert p == pytest.approx(reference.pvalue, rel=1e-9)


# -------------------------------------------------------------------------- ranks


def test_average_ranks_share_ties():
    x = torch.tensor([[3.0, 1.0, 2.0, 2.0, 5.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]])
    expected = [[5.0, 1.5, 3.5, 3.5, 6.0, 1.5], [4.0, 4.0, 4.0, 4.0, 4.0, 1.0]]
    assert torch.equal(average_ranks(x), torch.tensor(expected, dtype=torch.float64))


def test_average_ranks_match_scipy_rankdata():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 7, (5, 40), generator=g).float() / 3  # many ties per row
    reference = np.stack([stats.rankdata(row, method="average") for row in x.numpy()])
    np.testing.assert_array_equal(average_ranks(x).numpy(), reference)
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        average_ranks(torch.zeros(4))
