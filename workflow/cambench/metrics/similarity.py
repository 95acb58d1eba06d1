"""Map similarity (SSIM, rank correlations) and the data randomization test.

The data randomization test (Adebayo et al., "Sanity checks for saliency maps",
NeurIPS 2018, https://arxiv.org/abs/1810.03292) trains the same architecture on the
training split with permuted labels: a model that can only memorize. A method whose
maps explain what the model learned must give different maps on that model; a method
whose maps stay the same (Spearman correlation at or above the threshold the
parameter randomization check uses) is flagged as independent of the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cambench.metrics.randomization import spearman
from cambench.metrics.ssim import gaussian_window, ssim
from cambench.saliency import explain_with_scores

__all__ = [
    "DataRandomizationResult",
    "data_randomization_test",
    "gaussian_window",
    "ssim",
]


@dataclass
class DataRandomizationResult:
    """Per image (B,) float64: ``spearman`` of the two maps (as :func:`explain` returns
    them; the statistic of the flag), ``spearman_abs`` and ``spearman_signed`` of the
    method's raw scores upsampled to the image (with and without absolute values,
    before ReLU and normalization), ``ssim`` of the maps; ``maps`` and ``randomized_maps``
    (B, H, W) the maps themselves."""

    spearman: torch.Tensor
    spearman_abs: torch.Tensor
    spearman_signed: torch.Tensor
    ssim: torch.Tensor
    maps: torch.Tensor
    randomized_maps: torch.Tensor

    def data_independent(self, threshold: float) -> bool:
        """True when the mean Spearman correlation of the maps is ``>= threshold`` (the
        parameter randomization check's rule, with its threshold)."""
        return bool(self.spearman.mean() >= threshold)


def data_randomization_test(
    model: nn.Module,
    randomized: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    method: str,
    params: dict[str, Any] | None = None,
    layer: str | None = None,
    batch_size: int = 64,
    object_masks: torch.Tensor | None = None,
) -> DataRandomizationResult:
    r"""Data randomization test of one saliency ``method`` (Adebayo et al., `"Sanity
    Checks for Saliency Maps" <https://arxiv.org/abs/1810.03292>`_, NeurIPS 2018).

    .. math::
        \rho_i = \rho\big(E(f, x_i, c_i), \; E(\tilde f, x_i, c_i)\big)

    where :math:`E` is the method, :math:`f` the trained model, :math:`\tilde f` the
    same architecture trained on permuted labels, :math:`c_i` the class explained on
    :math:`f` (explained on both models) and :math:`\rho` the Spearman rank correlation
    (:func:`cambench.metrics.randomization.spearman`); SSIM (:func:`ssim`) of the same
    pairs is reported beside it. A method whose maps do not depend on what the model
    learned keeps :math:`\rho` near 1 (flagged, :meth:`DataRandomizationResult.data_independent`).

    ``images`` (B, 3, H, W) in [0, 1], ``targets`` (B,), ``object_masks`` (B, H, W) the object
    masks for a method that reads them (``mask_oracle``), explained ``batch_size`` at a
    time. ``layer`` (default the model's) is resolved by name in each model.

    Example::
        >>> import torch
        >>> from cambench.metrics.similarity import data_randomization_test
        >>> from cambench.models.small_resnet import SmallResNet
        >>> _ = torch.manual_seed(0)
        >>> model = SmallResNet(num_classes=10, width=4, blocks=(1, 1, 1, 1)).eval()
        >>> other = SmallResNet(num_classes=10, width=4, blocks=(1, 1, 1, 1)).eval()
        >>> images, targets = torch.rand(2, 3, 16, 16), torch.tensor([3, 7])
        >>> result = data_randomization_test(model, other, images, targets, "fakecam")
        >>> result.spearman.tolist(), result.data_independent(0.99)
        ([1.0, 1.0], True)
    """
    params = dict(params or {})

    def maps_of(net: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        maps, scores = [], []
        for i in range(0, images.shape[0], batch_size):
            extra = (
                {} if object_masks is None else {"object_masks": object_masks[i : i + batch_size]}
            )
            m, raw = explain_with_scores(
                method,
                net,
                images[i : i + batch_size],
                targets[i : i + batch_size],
                layer=layer,
                **extra,
                **params,
            )
            maps.append(m)
            scores.append(raw)
        return torch.cat(maps), torch.cat(scores)

    maps, raw = maps_of(model)
    other, other_raw = maps_of(randomized)
    return DataRandomizationResult(
        spearman=spearman(maps, other),
        spearman_abs=spearman(raw.abs(), other_raw.abs()),
        spearman_signed=spearman(raw, other_raw),
        ssim=ssim(maps, other),
        maps=maps,
        randomized_maps=other,
    )
