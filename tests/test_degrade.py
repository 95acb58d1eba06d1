"""Images degraded by saliency maps (ROAR/KAR, cambench.data.degrade) against hand
computations: ranks, ties, counts and the mean imputation."""

from __future__ import annotations

import numpy as np
import torch

from cambench.data.degrade import (
    DegradedImages,
    channel_mean,
    impute_mean,
    replaced_pixels,
    salience_order,
    tie_keys,
)


def test_the_top_fraction_is_replaced_for_roar_and_kept_for_kar():
    # a 3×3 map with distinct values: order 8, 7, ..., 0 by value
    values = torch.tensor([[0.1, 0.9, 0.3], [0.8, 0.2, 0.7], [0.4, 0.6, 0.5]])
    maps = values[None]
    index = torch.tensor([4])
    order = salience_order(maps, index, seed=0)[0].tolist()
    assert order == [1, 3, 5, 7, 8, 6, 2, 4, 0]  # flat positions by decreasing value
    # f = 1/3 of 9 pixels: the top 3 (0.9, 0.8, 0.7)
    roar = replaced_pixels(maps, index, 1 / 3, keep=False, seed=0)[0]
    assert roar.flatten().nonzero().flatten().tolist() == [1, 3, 5]
    kar = replaced_pixels(maps, index, 1 / 3, keep=True, seed=0)[0]
    assert torch.equal(kar, ~roar)
    # round(f · P): 0.5 · 9 = 4.5 → 5 pixels; 0 and 1 replace nothing and everything
    assert replaced_pixels(maps, index, 0.5, False, 0).sum() == 5
    assert replaced_pixels(maps, index, 0.0, False, 0).sum() == 0
    assert replaced_pixels(maps, index, 1.0, False, 0).sum() == 9


def test_ties_are_broken_by_the_seeded_hash_whatever_the_batch():
    maps = torch.zeros(3, 4, 4)
    maps[:, 0, 0] = 1.0  # one clear top pixel, 15 tied ones
    index = torch.tensor([10, 11, 12])
    order = salience_order(maps, index, seed=3)
    assert (order[:, 0] == 0).all()
    keys = tie_keys(index, 16, seed=3)
    for b in range(3):  # the tied pixels in increasing key order
        tied = [p for p in range(1, 16)]
        expected = sorted(tied, key=lambda p, b=b: int(keys[b, p]))
        assert order[b, 1:].tolist() == expected
    # the same image alone, or in another batch, gets the same order
    alone = salience_order(maps[1:2], index[1:2], seed=3)
    assert torch.equal(alone[0], order[1])
    # another seed, another order of the ties; the hash spreads (no fixed pattern)
    other = salience_order(maps, index, seed=4)
    assert not torch.equal(other[:, 1:], order[:, 1:])
    assert len({tuple(o) for o in order[:, 1:].tolist()}) == 3


def test_mean_imputation_by_hand():
    images = torch.arange(2 * 3 * 2 * 2, dtype=torch.uint8).view(2, 3, 2, 2)
    replaced = torch.tensor([[[True, False], [False, False]], [[False, False], [False, True]]])
    mean = torch.tensor([100, 150, 200], dtype=torch.uint8)
    out = impute_mean(images, replaced, mean)
    expected = images.clone()
    expected[0, :, 0, 0] = mean
    expected[1, :, 1, 1] = mean
    assert torch.equal(out, expected)


def test_channel_mean_and_degraded_rows_read_on_the_fly():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (5, 3, 4, 4), dtype=np.uint8))
    mean = channel_mean(images, batch_size=2)
    np.testing.assert_allclose(mean.numpy(), images.numpy().astype(float).mean((0, 2, 3)))
    maps = torch.from_numpy(rng.random((5, 4, 4)).astype(np.float32))
    degraded = DegradedImages(images, maps, fraction=0.25, keep=False, mean=mean, seed=1)
    assert len(degraded) == 5 and degraded.shape == (5, 3, 4, 4)
    rows = degraded[torch.tensor([3, 1])]
    fill = torch.round(mean).to(torch.uint8)
    for out, i in zip(rows, (3, 1), strict=True):
        top4 = np.argsort(-maps[i].numpy().ravel(), kind="stable")[:4]  # distinct values
        expected = images[i].clone().view(3, -1)
        expected[:, top4] = fill[:, None]
        assert torch.equal(out.view(3, -1), expected)
    assert torch.equal(degraded[2], degraded[2:3][0])
    assert torch.equal(degraded[:], degraded[torch.arange(5)])
