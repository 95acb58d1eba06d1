r"""Faithfulness by correlation: does the map's attribution predict the output change?

- :func:`faithfulness_correlation` (`Bhatt et al., IJCAI 2020, "Evaluating and
  Aggregating Feature-based Model Explanations" <https://arxiv.org/abs/2005.00631>`_):
  over ``n_subsets`` random subsets :math:`S` of ``subset_size`` pixels,

  .. math:: \mu_F = \operatorname{corr}_S\Big(\sum_{i \in S} S_i,\;
            f(x) - f(x_{[x_S = \bar x_S]})\Big)

  (Pearson; :math:`\bar x` the baseline, ``"black"`` = 0 or the image's per-channel
  ``"mean"``); higher is better (↑).
- :func:`monotonicity_correlation` (`Nguyen & Martínez, 2020, "On quantitative aspects
  of model interpretability" <https://arxiv.org/abs/2007.07584>`_): the pixels, in
  ascending order of :math:`|S|`, are taken ``pixels_per_step`` at a time; each group
  :math:`G` is replaced ``n_samples`` times by values drawn uniformly from
  [``low``, ``high``], and

  .. math:: \rho = \operatorname{spearman}_G\Big(\sum_{i\in G} |S_i|,\;
            \tfrac{1}{f(x)^2}\,\mathbb{E}\big[(f(\tilde x_G) - f(x))^2\big]\Big)

  (the :math:`1/f(x)^2` factor, as in Quantus, does not change the ranks); higher is
  better (↑).

:math:`f` is the target's softmax probability (``output="probability"``) or its
logit (``"logit"``). A pixel is replaced in all its channels. Quantus 0.6 instead
treats every channel value of every pixel as a feature (its subsets and groups are
drawn over C·H·W values of the map broadcast over channels) and draws one uniform
value per image and sample for all features of a group; on one-channel images with
one pixel per group both definitions coincide, which the tests use.

The random subsets and values are :func:`cambench.metrics.draws.hash_uniform` draws
of (``seed``, the image's split position, the subset or group-and-sample number), so
an image's score does not depend on its batch. Correlations with a constant side are
0.
"""

from __future__ import annotations

import math

import torch

from cambench.metrics.draws import hash_uniform, hash_uniform_at, model_output, pearson_rows
from cambench.metrics.statistics import average_ranks

__all__ = ["faithfulness_correlation", "monotonicity_correlation", "random_subsets"]


def _check(images: torch.Tensor, maps: torch.Tensor, index: torch.Tensor) -> None:
    if images.ndim != 4 or maps.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(
            f"images must be (B, C, H, W) and maps (B, H, W), got {tuple(images.shape)} "
            f"and {tuple(maps.shape)}"
        )
    if index.shape != (images.shape[0],):
        raise ValueError(f"index must be (B,), got {tuple(index.shape)}")


def random_subsets(index: torch.Tensor, n_pixels: int, size: int, run: int, seed: int):
    """(B, size) pixel positions: each image's ``run``-th random subset (the ``size``
    smallest of its seeded uniform keys), ascending."""
    keys = hash_uniform(index, n_pixels, seed, run)
    chosen = torch.topk(keys, size, dim=1, largest=False).indices
    return torch.sort(chosen, dim=1).values


def _baseline(images: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "black":
        return torch.zeros_like(images[:, :, :1, :1])
    if kind == "mean":
        return images.mean(dim=(2, 3), keepdim=True)
    raise ValueError(f"baseline must be black or mean, got {kind!r}")


def faithfulness_correlation(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    maps: torch.Tensor,
    index: torch.Tensor,
    subset_size: int = 224,
    n_subsets: int = 100,
    baseline: str = "black",
    output: str = "probability",
    seed: int = 0,
    batch_size: int = 512,
) -> torch.Tensor:
    """Faithfulness correlation of each map, (B,) float64 (module docstring).

    Example::
        >>> import torch
        >>> from cambench.metrics.correlation import faithfulness_correlation
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64, 2))
        >>> images, maps = torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8)
        >>> faithfulness_correlation(model, images, torch.tensor([0, 1]), maps,
        ...                          torch.arange(2), subset_size=8, n_subsets=10).shape
        torch.Size([2])
    """
    _check(images, maps, index)
    b, c, h, w = images.shape
    n = h * w
    if not 0 < subset_size <= n:
        raise ValueError(f"subset_size must lie in [1, {n}] (H·W), got {subset_size}")
    flat_maps = maps.flatten(1).double()
    fill = _baseline(images, baseline).expand(b, c, 1, 1).flatten(2)  # (B, C, 1)
    before = model_output(model, images, targets, output, batch_size).double()
    sums, drops = [], []
    runs_per_chunk = max(1, batch_size // max(b, 1))
    for start in range(0, n_subsets, runs_per_chunk):
        runs = range(start, min(n_subsets, start + runs_per_chunk))
        perturbed = []
        for run in runs:
            subset = random_subsets(index, n, subset_size, run, seed)
            sums.append(flat_maps.gather(1, subset).sum(dim=1))
            mask = torch.zeros(b, n, dtype=torch.bool, device=images.device)
            mask.scatter_(1, subset, True)
            flat = torch.where(mask[:, None], fill, images.flatten(2))
            perturbed.append(flat.reshape(b, c, h, w))
        stacked = torch.cat(perturbed)  # run-major
        after = model_output(model, stacked, targets.repeat(len(runs)), output, batch_size)
        drops.append(before[None] - after.double().reshape(len(runs), b))
    return pearson_rows(torch.stack(sums, dim=1), torch.cat(drops).T)


def monotonicity_correlation(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    maps: torch.Tensor,
    index: torch.Tensor,
    pixels_per_step: int = 16,
    n_samples: int = 10,
    low: float = 0.0,
    high: float = 1.0,
    eps: float = 1e-5,
    output: str = "probability",
    seed: int = 0,
    batch_size: int = 512,
) -> torch.Tensor:
    """Monotonicity correlation of each map, (B,) float64 (module docstring). The
    ascending order of the map breaks ties by pixel position.

    Example::
        >>> import torch
        >>> from cambench.metrics.correlation import monotonicity_correlation
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64, 2))
        >>> images, maps = torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8)
        >>> monotonicity_correlation(model, images, torch.tensor([0, 1]), maps,
        ...                          torch.arange(2), pixels_per_step=8, n_samples=3).shape
        torch.Size([2])
    """
    _check(images, maps, index)
    b, c, h, w = images.shape
    n = h * w
    k = int(pixels_per_step)
    if not 0 < k <= n or n_samples < 1:
        raise ValueError(f"pixels_per_step must lie in [1, {n}] and n_samples >= 1")
    steps = math.ceil(n / k)
    absolute = maps.flatten(1).double().abs()
    order = torch.sort(absolute, dim=1, stable=True).indices  # ascending
    before = model_output(model, images, targets, output, batch_size).double()
    weight = torch.where(before.abs() >= eps, 1.0 / before.abs().clamp(min=eps), 1.0) ** 2
    attributions, variances = [], []
    flat_images = images.flatten(2)
    channel_offset = (torch.arange(c, device=images.device) * n)[None, :, None]
    groups_per_chunk = max(1, batch_size // max(b * n_samples, 1))
    for start in range(0, steps, groups_per_chunk):
        groups = range(start, min(steps, start + groups_per_chunk))
        perturbed = []
        for g in groups:
            pixels = order[:, g * k : (g + 1) * k]
            attributions.append(absolute.gather(1, pixels).sum(dim=1))
            # the draws of the group's pixels only: element ch·H·W + pixel
            where = pixels[:, None, :].expand(b, c, pixels.shape[1])
            elements = (channel_offset + where).flatten(1)
            for s in range(n_samples):
                u = hash_uniform_at(index, elements, seed, g * n_samples + s)
                values = (low + (high - low) * u).to(images.dtype).reshape(where.shape)
                perturbed.append(flat_images.scatter(2, where, values))
        stacked = torch.cat(perturbed).reshape(-1, c, h, w)  # (group, sample)-major
        after = model_output(
            model, stacked, targets.repeat(len(groups) * n_samples), output, batch_size
        ).double()
        after = after.reshape(len(groups), n_samples, b)
        variances.append(((after - before) ** 2).mean(dim=1) * weight)  # (groups, B)
    att = torch.stack(attributions, dim=1)
    var = torch.cat(variances).T
    return pearson_rows(average_ranks(att), average_ranks(var))
