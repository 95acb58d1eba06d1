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
import torch.nn.functional as F
from torch import nn

from cambench.metrics.randomization import spearman
from cambench.saliency import explain_with_scores

__all__ = [
    "DataRandomizationResult",
    "data_randomization_test",
    "gaussian_window",
    "ssim",
]


def gaussian_window(sigma: float, radius: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The normalized 1-D Gaussian ``exp(-x² / 2σ²)`` on ``x = -radius … radius``."""
    x = torch.arange(-radius, radius + 1, dtype=dtype)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    sigma: float = 1.5,
    window: int = 11,
    data_range: float = 1.0,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    r"""Mean structural similarity of each pair of maps: (B,) float64 for (B, H, W)
    inputs, with a Gaussian window as in Wang et al., `"Image quality assessment: from
    error visibility to structural similarity" <https://doi.org/10.1109/TIP.2003.819861>`_
    (IEEE TIP 2004).

    .. math::
        \mathrm{SSIM}(a, b) = \frac{1}{|Q|} \sum_{q \in Q}
        \frac{(2 \mu_a \mu_b + C_1)(2 \sigma_{ab} + C_2)}
        {(\mu_a^2 + \mu_b^2 + C_1)(\sigma_a^2 + \sigma_b^2 + C_2)}

    where :math:`\mu`, :math:`\sigma^2` and :math:`\sigma_{ab}` are the local means,
    variances and covariance under a ``window`` × ``window`` Gaussian of standard
    deviation ``sigma`` centred at pixel :math:`q`, :math:`C_1 = (k_1 L)^2`,
    :math:`C_2 = (k_2 L)^2` with :math:`L` the ``data_range``, and :math:`Q` the pixels
    whose window lies inside the map (the border of half a window is left out, as
    scikit-image's ``structural_similarity`` with ``gaussian_weights=True`` does).
    1 for equal maps; maps smaller than the window are a ValueError.

    Example::
        >>> import torch
        >>> from cambench.metrics.similarity import ssim
        >>> a = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> ssim(a, a)
        tensor([1., 1.], dtype=torch.float64)
        >>> bool((ssim(a, 1 - a) < 0).all())  # inverted structure
        True
    """
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"maps must have equal shapes (B, H, W), got {a.shape} and {b.shape}")
    if window % 2 == 0 or window < 3:
        raise ValueError(f"the SSIM window must be an odd size >= 3, got {window}")
    if min(a.shape[-2:]) < window:
        raise ValueError(
            f"maps of {tuple(a.shape[-2:])} pixels are smaller than the SSIM window ({window})"
        )
    g = gaussian_window(sigma, window // 2).to(a.device)
    kernel = (g[:, None] * g[None, :]).view(1, 1, window, window)

    def blur(x: torch.Tensor) -> torch.Tensor:  # valid positions only
        return F.conv2d(x, kernel)

    x, y = a.double().unsqueeze(1), b.double().unsqueeze(1)
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return s.flatten(1).mean(dim=1)


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
