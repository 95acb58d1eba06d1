r"""Complexity of saliency maps: how concentrated the attribution is. No model needed.

All three read the absolute map :math:`a = |S|` flattened over its :math:`n` pixels
((B, H, W) maps in, (B,) float64 out).

- :func:`sparseness`: the Gini index of :math:`a` (`Chalasani et al., ICML 2020,
  "Concise Explanations of Neural Networks using Adversarial Training"
  <https://arxiv.org/abs/1810.06583>`_), with :math:`a_{(1)} \le \dots \le a_{(n)}`:

  .. math:: G(a) = \frac{\sum_{k=1}^n (2k - n - 1)\, a_{(k)}}{n \sum_k a_{(k)}}

  0 for a constant map, :math:`1 - 1/n` for a single pixel; higher is sparser (↑).
  An all-zero map scores 0 (a constant). Quantus 0.6 adds 1e-7 to every
  max-normalized value first, which lowers the index of sparse maps slightly.
- :func:`complexity`: the entropy of the fractional contributions
  :math:`p_i = a_i / \sum_j a_j` (`Bhatt et al., IJCAI 2020, "Evaluating and
  Aggregating Feature-based Model Explanations" <https://arxiv.org/abs/2005.00631>`_),
  :math:`H = -\sum_i p_i \ln p_i` in nats with :math:`0 \ln 0 = 0`; lower is simpler
  (↓). An all-zero map counts as uniform (:math:`\ln n`, the limit of a constant map).
  Quantus 0.6 computes :math:`-\sum p_i \ln(p_i + 10^{-12})` (a difference below
  :math:`n \cdot 10^{-12}`) and returns NaN for an all-zero map.
- :func:`effective_complexity`: the fraction of pixels whose max-normalized
  attribution exceeds ``eps`` (`Nguyen & Martínez, 2020, "On quantitative aspects of
  model interpretability" <https://arxiv.org/abs/2007.07584>`_), lower is simpler (↓).
  Quantus 0.6 returns the count, i.e. this fraction times :math:`n`.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["complexity", "effective_complexity", "sparseness"]


def _flat_abs(maps: torch.Tensor) -> torch.Tensor:
    if maps.ndim < 2:
        raise ValueError(f"maps must be (B, ...), got shape {tuple(maps.shape)}")
    return maps.flatten(1).double().abs()


def _sorted_abs(maps: torch.Tensor) -> torch.Tensor:
    """Each absolute map flattened and sorted ascending, (B, n) float64, sorted in
    float32 unless the maps are float64 (float16 and bfloat16 convert exactly).

    On the CPU the sort is numpy's, on a zero-copy view: its vectorized sort takes
    0.4 ms for 64 maps of 1024 values where torch's CPU sort takes 2.0 ms (3.2 ms for
    floats), and 67 ms against 148 ms at 224 x 224 (one thread, 2026-12-04); the
    sparseness benchmark is in ``benchmarks/results/metrics-cpu.txt``. Elsewhere
    torch's sort; both give the same values."""
    if maps.ndim < 2:
        raise ValueError(f"maps must be (B, ...), got shape {tuple(maps.shape)}")
    a = maps.detach().flatten(1).abs()
    if a.dtype != torch.float64:
        a = a.float()
    if a.device.type == "cpu":
        return torch.from_numpy(np.sort(a.numpy(), axis=1)).double()
    return torch.sort(a, dim=1).values.double()


def sparseness(maps: torch.Tensor) -> torch.Tensor:
    """Gini index of each absolute map (see the module docstring), (B,) float64.

    Example::
        >>> import torch
        >>> from cambench.metrics.complexity import sparseness
        >>> sparseness(torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 2.0]]]))
        tensor([0.0000, 0.7500], dtype=torch.float64)
    """
    a = _sorted_abs(maps)
    n = a.shape[1]
    k = torch.arange(1, n + 1, dtype=torch.float64, device=a.device)
    total = a.sum(dim=1)
    num = ((2 * k - n - 1) * a).sum(dim=1)
    return torch.where(total > 0, num / (n * torch.where(total > 0, total, 1.0)), 0.0)


def complexity(maps: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each absolute map's fractional contributions, (B,) float64.

    Example::
        >>> import torch
        >>> from cambench.metrics.complexity import complexity
        >>> complexity(torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 2.0]]]))
        tensor([1.3863, 0.0000], dtype=torch.float64)
    """
    a = _flat_abs(maps)
    total = a.sum(dim=1, keepdim=True)
    uniform = torch.full_like(a, 1.0 / a.shape[1])
    p = torch.where(total > 0, a / torch.where(total > 0, total, 1.0), uniform)
    return 0.0 - torch.special.xlogy(p, p).sum(dim=1)


def effective_complexity(maps: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Fraction of pixels whose ``|S| / max |S|`` exceeds ``eps``, (B,) float64.

    Example::
        >>> import torch
        >>> from cambench.metrics.complexity import effective_complexity
        >>> effective_complexity(torch.tensor([[[0.0, 1e-7], [0.5, 1.0]]]))
        tensor([0.5000], dtype=torch.float64)
    """
    a = _flat_abs(maps)
    peak = a.amax(dim=1, keepdim=True)
    normalized = a / torch.where(peak > 0, peak, 1.0)
    return (normalized > float(eps)).double().mean(dim=1)
