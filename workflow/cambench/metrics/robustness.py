"""Robustness of saliency maps to small input perturbations: max- and avg-sensitivity
(Yeh et al. 2019) and relative input stability (Agarwal et al. 2022).

Both re-run the saliency method on perturbed copies of each image, so they take an
``explain_fn(images, targets) -> maps`` besides the maps already computed for the
clean images. Their cost is ``n_samples`` explanations of the batch (the floor) plus,
for relative input stability, one forward per sample (the prediction check).

The perturbation of sample ``s`` adds uniform noise from ``[-radius, radius]`` to
every pixel and colour channel (a draw from the L∞ ball of the papers), then clamps
to [0, 1], the range every cambench model and :func:`cambench.saliency.explain`
take. The noise is a hash of (seed, the image's position in its split, ``s``,
element) (:func:`cambench.metrics.draws.hash_uniform`): an image's value does not
depend on its batch, and a test can hand the same draws to a reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cambench.metrics.draws import hash_uniform

__all__ = [
    "ExplainFn",
    "Sensitivity",
    "perturb_uniform",
    "relative_input_stability",
    "sensitivity",
]

#: ``explain_fn(images, targets) -> (B, H, W) maps``: the method under test.
ExplainFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def perturb_uniform(
    images: torch.Tensor, index: torch.Tensor, radius: float, seed: int, sample: int
) -> torch.Tensor:
    """``images`` + uniform noise from ``[-radius, radius]`` (float64 draws added in
    float64), clamped to [0, 1], in the images' dtype; sample ``sample`` of the images
    at split positions ``index``.

    Example::
        >>> import torch
        >>> from cambench.metrics.robustness import perturb_uniform
        >>> x = torch.full((2, 3, 4, 4), 0.5)
        >>> y = perturb_uniform(x, torch.tensor([0, 1]), 0.1, seed=0, sample=0)
        >>> bool(((y - x).abs() <= 0.1 + 1e-7).all()), bool((y != x).any())
        (True, True)
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    b = images.shape[0]
    u = hash_uniform(index.to(images.device), images[0].numel(), seed, sample)
    noise = (2.0 * u - 1.0) * float(radius)
    out = (images.reshape(b, -1).double() + noise).clamp(0.0, 1.0)
    return out.to(images.dtype).reshape(images.shape)


@dataclass
class Sensitivity:
    """Per-image max- and avg-sensitivity (B,) float64, from the same perturbations."""

    max: torch.Tensor
    avg: torch.Tensor


def sensitivity(
    explain_fn: ExplainFn,
    images: torch.Tensor,
    targets: torch.Tensor,
    maps: torch.Tensor,
    index: torch.Tensor,
    radius: float = 0.02,
    n_samples: int = 10,
    seed: int = 0,
    relative: bool = False,
) -> Sensitivity:
    r"""Max- and avg-sensitivity of each image's map, as defined in `"On the (In)fidelity
    and Sensitivity of Explanations" <https://arxiv.org/abs/1901.09392>`_ (Yeh et al.,
    NeurIPS 2019).

    .. math::
        \mathrm{SENS}_{\max} = \max_{s} \lVert \Phi(x + \delta_s) - \Phi(x) \rVert_2,
        \qquad
        \mathrm{SENS}_{\mathrm{avg}} = \frac{1}{S} \sum_{s}
        \lVert \Phi(x + \delta_s) - \Phi(x) \rVert_2

    with :math:`\Phi(x)` the map (``maps``), :math:`\delta_s` uniform in the L∞ ball of
    radius ``radius`` (:func:`perturb_uniform`, sample ``s`` of ``n_samples``) and the
    Frobenius norm over the map's pixels. Lower is more robust. ``relative=True``
    divides by :math:`\lVert \Phi(x) \rVert_2` as the authors' code and Quantus do
    (not in the paper's equations; NaN for an all-zero map).

    Example::
        >>> import torch
        >>> from cambench.metrics.robustness import sensitivity
        >>> images, targets = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
        >>> mean_map = lambda x, t: x.mean(dim=1)  # a map that follows the pixels
        >>> s = sensitivity(mean_map, images, targets, mean_map(images, targets),
        ...                 torch.tensor([0, 1]), radius=0.01, n_samples=3)
        >>> bool((s.max >= s.avg).all()), bool((s.max <= 0.01 * 8).all())
        (True, True)
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    a = maps.flatten(1).double()
    scale = a.norm(dim=1) if relative else torch.ones_like(a[:, 0])
    scale = torch.where(scale > 0, scale, torch.nan)
    values = []
    for s in range(n_samples):
        x = perturb_uniform(images, index, radius, seed, s)
        b = explain_fn(x, targets).flatten(1).double()
        values.append((a - b).norm(dim=1) / scale)
    v = torch.stack(values, dim=1)
    return Sensitivity(max=v.max(dim=1).values, avg=v.mean(dim=1))


def relative_input_stability(
    model: nn.Module,
    explain_fn: ExplainFn,
    images: torch.Tensor,
    targets: torch.Tensor,
    maps: torch.Tensor,
    index: torch.Tensor,
    radius: float = 0.02,
    n_samples: int = 10,
    seed: int = 0,
    eps: float = 1e-6,
) -> torch.Tensor:
    r"""Relative input stability (RIS) of each image's map, as defined in `"Rethinking
    Stability for Attribution-based Explanations" <https://arxiv.org/abs/2203.06877>`_
    (Agarwal et al., 2022): (B,) float64, lower is more stable.

    .. math::
        \mathrm{RIS}(x) = \max_{x' : \hat y(x') = \hat y(x)}
        \frac{\lVert (e_x - e_{x'}) / e_x \rVert_2}
        {\max\big(\lVert (x - x') / x \rVert_2, \epsilon_{\min}\big)}

    the divisions element-wise, :math:`e_x` the map (``maps``), :math:`x'` the samples
    of :func:`perturb_uniform`, :math:`\hat y` the model's predicted class and
    :math:`\epsilon_{\min}` = ``eps``. A zero element of :math:`e_x` or :math:`x` is
    divided by ``eps`` instead (the paper leaves that case open; Quantus does the
    same). Samples whose prediction changed are left out, as in the paper; an image
    whose every sample changed prediction is NaN.

    Example::
        >>> import torch
        >>> from torch import nn
        >>> from cambench.metrics.robustness import relative_input_stability
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
        >>> images = 0.25 + 0.5 * torch.rand(2, 3, 8, 8)
        >>> same = lambda x, t: torch.ones(x.shape[0], 8, 8)  # a map that never changes
        >>> relative_input_stability(model, same, images, torch.tensor([0, 1]),
        ...                          same(images, None), torch.tensor([0, 1]), n_samples=2)
        tensor([0., 0.], dtype=torch.float64)
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    e = maps.flatten(1).double()
    x = images.flatten(1).double()
    e_div = torch.where(e == 0, eps, e)
    x_div = torch.where(x == 0, eps, x)
    values = []
    for s in range(n_samples):
        xs = perturb_uniform(images, index, radius, seed, s)
        with torch.no_grad():
            same = model(xs).argmax(dim=1) == predicted
        es = explain_fn(xs, targets).flatten(1).double()
        num = ((e - es) / e_div).norm(dim=1)
        den = ((x - xs.flatten(1).double()) / x_div).norm(dim=1).clamp_min(eps)
        values.append(torch.where(same, num / den, torch.nan))
    v = torch.stack(values, dim=1)
    best = torch.where(v.isnan(), -torch.inf, v).max(dim=1).values
    return torch.where(best == -torch.inf, torch.nan, best)
