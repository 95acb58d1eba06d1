"""Structural similarity (SSIM; Wang et al., "Image quality assessment: from error
visibility to structural similarity", IEEE TIP 2004) of saliency maps, with a Gaussian
window: shared by the data randomization test and the random-logit check."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gaussian_window", "ssim"]


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
