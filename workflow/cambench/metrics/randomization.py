"""Model parameter randomization test (Adebayo et al., "Sanity checks for saliency
maps", NeurIPS 2018), cascading version.

The model's layers are re-initialized from the output side down, cumulatively: step 1
randomizes the last block (e.g. ``fc``), step 2 also the one before it (``layer4``),
and so on down to the stem. At each step every method's maps are recomputed on the same
images for the same classes, and compared with the maps of the trained model by the
Spearman rank correlation of the flattened maps (per image; mean over images). A map
that explains the model must change when the model is destroyed; a method whose maps
keep a correlation of at least ``threshold`` (the config's ``sanity.threshold``) at every step is **model
independent** and is flagged in the summary (Fake-CAM and Random are, by construction).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cambench.metrics.draws import hash_normal, hash_uniform
from cambench.metrics.ssim import ssim
from cambench.metrics.statistics import average_ranks
from cambench.saliency import explain

__all__ = [
    "RandomizationResult",
    "cascade",
    "cascade_blocks",
    "discrete_entropy",
    "efficient_mprt",
    "other_classes",
    "random_logit",
    "randomization_test",
    "reinitialize",
    "smooth_mprt",
    "smoothed_maps",
    "spearman",
]


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r"""Spearman rank correlation of each pair of maps: (B,) float64 for (B, ...) inputs,
    the similarity measure of `"Sanity Checks for Saliency Maps"
    <https://arxiv.org/abs/1810.03292>`_ (Adebayo et al., NeurIPS 2018).

    .. math::
        \rho(a, b) = \frac{\sum_q (r_q - \bar r)(s_q - \bar s)}
        {\sqrt{\sum_q (r_q - \bar r)^2} \sqrt{\sum_q (s_q - \bar s)^2}}

    where :math:`r_q` and :math:`s_q` are the average ranks (:func:`average_ranks`) of
    pixel :math:`q` in the flattened maps :math:`a` and :math:`b`.

    The Pearson correlation of the average ranks of the flattened maps (ties share
    their average rank, so a map that is constant but for one pixel, like Fake-CAM's,
    is ranked correctly). Where a map is constant the correlation is undefined; it is
    then 1 if the two maps are equal (nothing changed) and 0 otherwise.

    Example::
        >>> import torch
        >>> from cambench.metrics import spearman
        >>> a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
        >>> spearman(a, torch.tensor([[1.0, 3.0, 2.0, 4.0]]))  # 1 - 6 * 2 / (4 * 15)
        tensor([0.8000], dtype=torch.float64)
    """
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"maps must have equal shapes (B, ...), got {a.shape} and {b.shape}")
    a, b = a.flatten(1), b.flatten(1)
    ra, rb = average_ranks(a), average_ranks(b)
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    norm = ra.norm(dim=1) * rb.norm(dim=1)
    rho = (ra * rb).sum(dim=1) / norm.clamp_min(1e-300)
    degenerate = norm == 0
    if degenerate.any():
        same = (a == b).all(dim=1).double()
        rho = torch.where(degenerate, same, rho)
    return rho.clamp(-1.0, 1.0)


def cascade_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The randomization cascade: the model's top-level children that hold parameters,
    output side first (reverse registration order). For cambench's SmallResNet:
    ``fc, layer4, layer3, layer2, layer1, stem``."""
    blocks = [
        (name, module)
        for name, module in model.named_children()
        if next(module.parameters(), None) is not None
    ]
    if not blocks:
        raise ValueError("the model has no child module with parameters to randomize")
    return blocks[::-1]


@torch.no_grad()
def reinitialize(module: nn.Module, seed: int) -> None:
    """Re-initialize ``module``'s parameters (and batch-norm statistics) in place.

    Every submodule with ``reset_parameters`` (convolutions, linear layers, batch
    norms) gets its own default initialization; a parameter of a module without one
    is redrawn from a normal distribution with its current mean and standard
    deviation. Seeded (``seed``) without touching the global random state.
    """
    devices = [p.device for p in module.parameters() if p.device.type == "cuda"]
    with torch.random.fork_rng(devices=sorted({d.index or 0 for d in devices})):
        torch.manual_seed(seed)
        covered: set[int] = set()
        for sub in module.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
                covered.update(id(p) for p in sub.parameters(recurse=False))
                if hasattr(sub, "reset_running_stats"):
                    sub.reset_running_stats()
        for p in module.parameters():
            if id(p) not in covered:
                std = float(p.std()) if p.numel() > 1 else 1.0
                p.normal_(float(p.mean()), std if std > 0 else 1.0)


@dataclass
class RandomizationResult:
    """``blocks``: the cascade, ``["none", "fc", "layer4", ...]``: ``blocks[k]`` is the
    block randomized at step k (together with every block before it), ``"none"`` at
    step 0; ``correlation``: (steps + 1, B) float64 Spearman correlation of each image's
    map with its map from the trained model (row 0 is 1 by definition)."""

    blocks: list[str]
    correlation: torch.Tensor

    def mean(self) -> torch.Tensor:
        return self.correlation.mean(dim=1)

    def model_independent(self, threshold: float) -> bool:
        """True when the mean correlation stays ``>= threshold`` at every step."""
        return bool((self.mean()[1:] >= threshold).all())


def randomization_test(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    method: str,
    params: dict[str, Any] | None = None,
    layer: str | None = None,
    seed: int = 0,
    batch_size: int = 64,
    blocks: Sequence[str] | None = None,
) -> RandomizationResult:
    r"""Cascading model parameter randomization test of one saliency ``method``, as
    described in `"Sanity Checks for Saliency Maps" <https://arxiv.org/abs/1810.03292>`_
    (Adebayo et al., NeurIPS 2018).

    .. math::
        \rho_{k,i} = \rho\big(E(f, x_i, c_i), \; E(f_k, x_i, c_i)\big)

    where :math:`E` is the method, :math:`f` the trained model, :math:`f_k` the model
    with its last :math:`k` blocks re-initialized, :math:`x_i` and :math:`c_i` an image
    and its explained class, and :math:`\rho` the Spearman rank correlation
    (:func:`spearman`). A faithful method's correlation falls as :math:`k` grows (↓);
    a method whose mean correlation stays at or above the threshold at every step is
    model independent (:meth:`RandomizationResult.model_independent`).

    ``images`` (B, 3, H, W) in [0, 1] and ``targets`` (B,) are explained by ``method``
    (through :func:`cambench.saliency.explain`, ``batch_size`` images at a time) on the
    trained ``model`` and on a copy whose blocks (:func:`cascade_blocks`, or the named
    top-level ``blocks`` in the given order) are re-initialized one more at each step,
    block ``k`` with seed ``seed + k``. ``model`` itself is not modified. The target
    layer (``layer``, default the model's) is resolved by name in every copy.

    Example::
        >>> import torch
        >>> from cambench.metrics import randomization_test
        >>> from cambench.models.small_resnet import SmallResNet
        >>> _ = torch.manual_seed(0)
        >>> model = SmallResNet(num_classes=10, width=4, blocks=(1, 1, 1, 1)).eval()
        >>> images, targets = torch.rand(2, 3, 16, 16), torch.tensor([3, 7])
        >>> result = randomization_test(model, images, targets, "fakecam")
        >>> result.blocks
        ['none', 'fc', 'layer4', 'layer3', 'layer2', 'layer1', 'stem']
        >>> result.model_independent(0.99)  # Fake-CAM ignores the model
        True
    """
    params = dict(params or {})

    def maps_of(net: nn.Module) -> torch.Tensor:
        return _explain_batches(method, net, images, targets, layer, params, batch_size).flatten(1)

    reference = maps_of(model)
    order: list[str] = []
    correlation = [torch.ones(images.shape[0], dtype=torch.float64, device=images.device)]
    for name, randomized in cascade(model, seed, blocks):
        order.append(name)
        correlation.append(spearman(reference, maps_of(randomized)))
    return RandomizationResult(["none", *order], torch.stack(correlation))


def cascade(
    model: nn.Module, seed: int = 0, blocks: Sequence[str] | None = None
) -> Iterator[tuple[str, nn.Module]]:
    """The cascading randomization: yields ``(block, copy)`` after re-initializing one
    more top-level block of a single deep copy of ``model`` (:func:`cascade_blocks`
    order, or the named ``blocks``), block ``k`` (from 1) with seed ``seed + k``. The
    copy is the same object at every step; ``model`` is not modified."""
    randomized = copy.deepcopy(model)
    children = dict(randomized.named_children())
    if blocks is None:
        order = [name for name, _ in cascade_blocks(randomized)]
    else:
        unknown = [name for name in blocks if name not in children]
        if unknown:
            raise ValueError(
                f"no top-level module(s) {unknown} to randomize; children: {', '.join(children)}"
            )
        order = list(blocks)
    for k, name in enumerate(order, start=1):
        reinitialize(children[name], seed + k)
        yield name, randomized


def _explain_batches(
    method: str,
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: str | None,
    params: dict[str, Any],
    batch_size: int,
) -> torch.Tensor:
    """``explain`` of ``images``, ``batch_size`` at a time: (N, H, W)."""
    return torch.cat(
        [
            explain(
                method,
                model,
                images[i : i + batch_size],
                targets[i : i + batch_size],
                layer=layer,
                **params,
            )
            for i in range(0, images.shape[0], batch_size)
        ]
    )


def other_classes(targets: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """A class other than each target, uniform over the ``num_classes - 1`` others, seeded:
    the ``k``-th non-target class for ``k`` drawn by :func:`hash_uniform` from (``seed``,
    the image's position in ``targets``), so an image's class does not depend on the
    others'.

    Example::
        >>> import torch
        >>> from cambench.metrics.randomization import other_classes
        >>> t = torch.tensor([0, 1, 2, 2])
        >>> bool((other_classes(t, 3, seed=0) != t).all())
        True
    """
    if num_classes < 2:
        raise ValueError(f"the random-logit test needs >= 2 classes, got {num_classes}")
    position = torch.arange(targets.shape[0], device=targets.device)
    u = hash_uniform(position, 1, seed, 0)[:, 0]
    k = (u * (num_classes - 1)).long().clamp_max(num_classes - 2)
    return k + (k >= targets).long()


def random_logit(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    method: str,
    params: dict[str, Any] | None = None,
    layer: str | None = None,
    num_classes: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> torch.Tensor:
    r"""Random-logit test of `"When Explanations Lie: Why Many Modified BP Attributions
    Fail" <https://arxiv.org/abs/1912.09818>`_ (Sixt et al., ICML 2020): (B,) float64
    SSIM between each image's map for its class and for a random other class.

    .. math::
        \mathrm{RL}(x) = \mathrm{SSIM}\big(E(f, x, c), \; E(f, x, c')\big),
        \quad c' \sim \mathcal{U}(\{1..C\} \setminus \{c\})

    with :math:`E` the method, :math:`c` the explained class (``targets``), :math:`c'`
    drawn by :func:`other_classes` and SSIM :func:`cambench.metrics.similarity.ssim`
    (Gaussian window on the 2-D maps, data range 1, as scikit-image's). Lower is
    better: a map that explains the class must change with it. ``num_classes``
    defaults to the model's output width.

    Example::
        >>> import torch
        >>> from cambench.metrics.randomization import random_logit
        >>> from cambench.models.small_resnet import SmallResNet
        >>> _ = torch.manual_seed(0)
        >>> model = SmallResNet(num_classes=10, width=4, blocks=(1, 1, 1, 1)).eval()
        >>> images, targets = torch.rand(2, 3, 16, 16), torch.tensor([3, 7])
        >>> random_logit(model, images, targets, "fakecam")  # the same map for any class
        tensor([1., 1.], dtype=torch.float64)
    """
    params = dict(params or {})
    if num_classes is None:
        with torch.no_grad():
            num_classes = int(model(images[:1]).shape[1])
    other = other_classes(targets, num_classes, seed)
    maps = _explain_batches(method, model, images, targets, layer, params, batch_size)
    others = _explain_batches(method, model, images, other, layer, params, batch_size)
    return ssim(maps, others)


def smoothed_maps(
    method: str,
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: str | None,
    params: dict[str, Any],
    n_samples: int,
    noise: float,
    seed: int,
    batch_size: int,
    include_clean: bool = False,
) -> torch.Tensor:
    r"""The mean map over ``n_samples`` noisy copies of each image,
    :math:`\bar E(x) = \frac1N \sum_n E(\mathrm{clip}_{[0,1]}(x + \epsilon_n))`,
    :math:`\epsilon_n \sim \mathcal N(0, \sigma^2)` with :math:`\sigma` = ``noise`` ×
    (max − min of the image); draws by :func:`cambench.metrics.draws.hash_normal` from
    (``seed``, the image's position, ``n``), the same for every model.
    ``include_clean``: the last of the ``n_samples`` is the clean image (Quantus 0.6)."""
    b = images.shape[0]
    position = torch.arange(b, device=images.device)
    flat = images.flatten(1).double()
    sigma = noise * (flat.amax(dim=1, keepdim=True) - flat.amin(dim=1, keepdim=True))
    total = torch.zeros(b, *images.shape[-2:], dtype=torch.float64, device=images.device)
    for n in range(n_samples):
        if include_clean and n == n_samples - 1:
            noisy = images
        else:
            eps = hash_normal(position, flat.shape[1], seed, n) * sigma
            noisy = (flat + eps).clamp(0.0, 1.0).to(images.dtype).view_as(images)
        total += _explain_batches(method, model, noisy, targets, layer, params, batch_size)
    return total / n_samples


def smooth_mprt(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    method: str,
    params: dict[str, Any] | None = None,
    layer: str | None = None,
    seed: int = 0,
    batch_size: int = 64,
    n_samples: int = 50,
    noise: float = 0.1,
    noise_seed: int = 0,
    blocks: Sequence[str] | None = None,
    include_clean: bool = False,
) -> RandomizationResult:
    r"""Smooth model parameter randomization test (sMPRT) of `"Sanity Checks Revisited:
    An Exploration to Repair the Model Parameter Randomisation Test"
    <https://arxiv.org/abs/2401.06465>`_ (Hedström et al., XAI in Action workshop,
    NeurIPS 2023): the cascading test of :func:`randomization_test` on maps averaged
    over noisy inputs (:func:`smoothed_maps`), which removes the shattered-gradient
    noise that makes gradient maps look model-independent or not by chance.

    .. math::
        \rho_{k,i} = \rho\big(\bar E(f, x_i, c_i), \; \bar E(f_k, x_i, c_i)\big)

    with :math:`\bar E` the mean of the method's maps over ``n_samples`` inputs with
    Gaussian noise of standard deviation ``noise`` × the image's range (seeded by
    ``noise_seed``, the same draws for every model), :math:`f_k` the cascade of
    :func:`cascade` (seeded by ``seed``) and :math:`\rho` the Spearman correlation.
    ``include_clean``: the last sample is the clean image, as Quantus 0.6 does (the
    paper averages noisy samples only).

    Example::
        >>> import torch
        >>> from cambench.metrics.randomization import smooth_mprt
        >>> from cambench.models.small_resnet import SmallResNet
        >>> _ = torch.manual_seed(0)
        >>> model = SmallResNet(num_classes=10, width=4, blocks=(1, 1, 1, 1)).eval()
        >>> images, targets = torch.rand(2, 3, 16, 16), torch.tensor([3, 7])
        >>> smooth_mprt(model, images, targets, "fakecam", n_samples=2).model_independent(0.99)
        True
    """
    params = dict(params or {})

    def smooth(net: nn.Module) -> torch.Tensor:
        return smoothed_maps(
            method, net, images, targets, layer, params, n_samples, noise, noise_seed,
            batch_size, include_clean,
        ).flatten(1)  # fmt: skip

    reference = smooth(model)
    order: list[str] = []
    correlation = [torch.ones(images.shape[0], dtype=torch.float64, device=images.device)]
    for name, randomized in cascade(model, seed, blocks):
        order.append(name)
        correlation.append(spearman(reference, smooth(randomized)))
    return RandomizationResult(["none", *order], torch.stack(correlation))


def discrete_entropy(maps: torch.Tensor, n_bins: int = 100) -> torch.Tensor:
    r"""Shannon entropy (nats) of each map's histogram of ``n_bins`` equal bins between
    its minimum and maximum, :math:`H = -\sum_j p_j \log p_j` with :math:`p_j` the share
    of pixels in bin :math:`j`: (B,) float64. Bins as ``numpy.histogram`` assigns them
    (the last bin closed); a constant map has entropy 0.

    Example::
        >>> import torch
        >>> from cambench.metrics.randomization import discrete_entropy
        >>> discrete_entropy(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), n_bins=10)  # log 2
        tensor([0.6931], dtype=torch.float64)
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    a = maps.flatten(1).double()
    lo, hi = a.amin(dim=1, keepdim=True), a.amax(dim=1, keepdim=True)
    flat = hi == lo
    lo, hi = torch.where(flat, lo - 0.5, lo), torch.where(flat, hi + 0.5, hi)
    steps = torch.arange(n_bins + 1, dtype=torch.float64, device=a.device)
    edges = steps * ((hi - lo) / n_bins) + lo  # (B, n_bins + 1), as numpy.linspace
    edges[:, -1:] = hi
    idx = ((a - lo) * (n_bins / (hi - lo))).long().clamp(0, n_bins - 1)
    idx = idx - (a < edges.gather(1, idx)).long()  # numpy's corrections at the edges
    up = (a >= edges.gather(1, idx + 1)) & (idx != n_bins - 1)
    idx = idx + up.long()
    counts = torch.zeros(a.shape[0], n_bins, dtype=torch.float64, device=a.device)
    counts.scatter_add_(1, idx, torch.ones_like(a))
    p = counts / counts.sum(dim=1, keepdim=True)
    return -(torch.where(p > 0, p * torch.log(p), 0.0)).sum(dim=1)


def efficient_mprt(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    method: str,
    params: dict[str, Any] | None = None,
    layer: str | None = None,
    seed: int = 0,
    batch_size: int = 64,
    n_bins: int = 100,
    blocks: Sequence[str] | None = None,
) -> torch.Tensor:
    r"""Efficient model parameter randomization test (eMPRT) of `"Sanity Checks
    Revisited: An Exploration to Repair the Model Parameter Randomisation Test"
    <https://arxiv.org/abs/2401.06465>`_ (Hedström et al., 2024): the relative rise in
    each map's complexity when the whole model is randomized, (B,) float64.

    .. math::
        \mathrm{eMPRT}(x) = \frac{H\big(E(f_K, x, c)\big) - H\big(E(f, x, c)\big)}
        {H\big(E(f, x, c)\big)}

    with :math:`H` the discrete entropy of the map's histogram (:func:`discrete_entropy`,
    ``n_bins`` bins), :math:`f_K` the model with every block of :func:`cascade`
    re-initialized (seeded by ``seed``). Higher is better: a map of a random model
    should be noisier than one of the trained model. No similarity measure is
    needed, only two explanations per image. Infinite where the trained model's map is
    constant (entropy 0) and the random one is not.

    Example::
        >>> import torch
        >>> from cambench.metrics.randomization import efficient_mprt
        >>> from cambench.models.small_resnet import SmallResNet
        >>> _ = torch.manual_seed(0)
        >>> model = SmallResNet(num_classes=10, width=4, blocks=(1, 1, 1, 1)).eval()
        >>> images, targets = torch.rand(2, 3, 16, 16), torch.tensor([3, 7])
        >>> efficient_mprt(model, images, targets, "fakecam")  # the same map either way
        tensor([0., 0.], dtype=torch.float64)
    """
    params = dict(params or {})
    before = discrete_entropy(
        _explain_batches(method, model, images, targets, layer, params, batch_size), n_bins
    )
    *_, (_, randomized) = cascade(model, seed, blocks)  # every block re-initialized
    after = discrete_entropy(
        _explain_batches(method, randomized, images, targets, layer, params, batch_size), n_bins
    )
    return (after - before) / before
