"""The rank table across metrics (cambench.summary.ranks) against scipy's rankdata and
hand-computed ranks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

from cambench.summary.ranks import average_ranks_rows, rank_table


def test_average_ranks_equal_scipy_rankdata_with_ties():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 4, size=(50, 7)).astype(float)  # many ties
    expected = np.stack([rankdata(row, method="average") for row in keys])
    np.testing.assert_array_equal(average_ranks_rows(keys), expected)


def _per_image(rng: np.random.Generator, n: int = 40) -> pd.DataFrame:
    frames = []
    for model in ("m1", "m2"):
        for shift, method in enumerate(("a", "b", "c", "random")):
            frames.append(
                pd.DataFrame(
                    {
                        "model": model,
                        "method": method,
                        "index": np.arange(n),
                        "AD": rng.normal(50 - 5 * shift, 10, n),  # lower is better
                        "insertion": rng.normal(40 + 5 * shift, 10, n),  # higher is better
                        "deletion": rng.normal(30, 10, n),
                        "pointing_game": np.nan,  # no masks: left out of the ranking
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def test_ranks_follow_each_metrics_direction_and_average_over_metrics():
    per_image = _per_image(np.random.default_rng(1))
    table = rank_table(per_image, resamples=200, confidence=0.9, seed=0)
    assert "rank_pointing_game" not in table.columns
    for model, group in per_image.groupby("model"):
        means = group.groupby("method", sort=False)[["AD", "insertion", "deletion"]].mean()
        rows = table[table["model"] == model].set_index("method")
        expected = {
            "AD": rankdata(means["AD"]),
            "insertion": rankdata(-means["insertion"]),
            "deletion": rankdata(means["deletion"]),
        }
        for column, ranks in expected.items():
            np.testing.assert_array_equal(rows.loc[means.index, f"rank_{column}"], ranks)
        stacked = np.stack(list(expected.values()), axis=1)
        np.testing.assert_allclose(rows.loc[means.index, "mean_rank"], stacked.mean(1))
        np.testing.assert_allclose(rows.loc[means.index, "median_rank"], np.median(stacked, 1))
        assert (rows["mean_rank_ci_low"] <= rows["mean_rank"] + 1e-12).all()
        assert (rows["mean_rank_ci_high"] >= rows["mean_rank"] - 1e-12).all()
        assert set(rows["n_metrics"]) == {3} and set(rows["n_images"]) == {40}


def test_the_interval_is_the_bootstrap_over_shared_images_and_is_seeded():
    per_image = _per_image(np.random.default_rng(2), n=30)
    one = rank_table(per_image, resamples=300, confidence=0.95, seed=5)
    two = rank_table(per_image, resamples=300, confidence=0.95, seed=5)
    pd.testing.assert_frame_equal(one, two)
    # an independent bootstrap: resample image positions, rank the means, average
    group = per_image[per_image["model"] == "m1"]
    methods = ["a", "b", "c", "random"]
    values = np.stack(
        [group[group["method"] == m][["AD", "insertion", "deletion"]].to_numpy() for m in methods],
        axis=1,
    )
    sign = np.array([1.0, -1.0, 1.0])
    rng = np.random.default_rng(5)
    draws = [rng.integers(0, 30, size=30) for _ in range(300)]
    # cambench's bootstrap draws its indices with its own generator: compare the
    # spread, not the draws — a wide interval for noisy, close methods
    means = np.stack([values[d].mean(0) for d in draws])  # (R, M, K)
    mean_ranks = np.stack(
        [np.mean([rankdata(sign[k] * m[:, k]) for k in range(3)], axis=0) for m in means]
    )
    low, high = np.quantile(mean_ranks, [0.025, 0.975], axis=0)
    ours = one[one["model"] == "m1"].set_index("method").loc[methods]
    assert np.all(np.abs(ours["mean_rank_ci_low"].to_numpy() - low) <= 0.75)
    assert np.all(np.abs(ours["mean_rank_ci_high"].to_numpy() - high) <= 0.75)


def test_excluded_pairs_are_not_ranked_and_images_are_joined_on_index():
    per_image = _per_image(np.random.default_rng(3), n=10)
    # method c lacks image 9: every method is ranked on images 0..8
    per_image = per_image[~((per_image["method"] == "c") & (per_image["index"] == 9))]
    table = rank_table(per_image, resamples=50, confidence=0.9, seed=0, excluded={("m1", "b")})
    m1 = table[table["model"] == "m1"]
    assert list(m1["method"]) == ["a", "c", "random"]
    assert set(m1["n_images"]) == {9}
    assert sorted(m1["rank_AD"]) == [1.0, 2.0, 3.0]
    assert len(table[table["model"] == "m2"]) == 4


@pytest.mark.parametrize("ties", [True])
def test_a_column_where_every_method_ties_gives_them_the_same_rank(ties):
    per_image = pd.DataFrame(
        {
            "model": "m",
            "method": np.repeat(["a", "b", "c"], 3),
            "index": np.tile(np.arange(3), 3),
            "AD": 10.0,
            "insertion": [1.0, 2, 3, 4, 5, 6, 7, 8, 9],
        }
    )
    table = rank_table(per_image, resamples=20, confidence=0.9, seed=0)
    assert list(table["rank_AD"]) == [2.0, 2.0, 2.0]
    assert list(table["rank_insertion"]) == [3.0, 2.0, 1.0]


def test_means_equal_to_the_tables_precision_tie():
    """CAM and Grad-CAM on a GAP->Linear model differ by float noise only: a 1e-6
    difference ties (both rank 1.5), a 0.01 one orders the methods."""
    per_image = pd.DataFrame(
        {
            "model": ["m"] * 6,
            "method": ["cam", "cam", "gradcam", "gradcam", "other", "other"],
            "index": [0, 1, 0, 1, 0, 1],
            "AD": [10.0, 20.0, 10.000001, 20.0, 10.01, 20.0],
        }
    )
    ranks = rank_table(per_image, resamples=50, confidence=0.95, seed=0).set_index("method")
    assert ranks["rank_AD"].to_dict() == {"cam": 1.5, "gradcam": 1.5, "other": 3.0}
    assert ranks.loc["cam", "mean_rank_ci_low"] == ranks.loc["gradcam", "mean_rank_ci_low"]
