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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cambench.metrics.statistics import average_ranks
from cambench.saliency import explain

__all__ = [
    "RandomizationResult",
    "cascade_blocks",
    "randomization_test",
    "reinitialize",
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
        out = [
            explain(
                method,
                net,
                images[i : i + batch_size],
                targets[i : i + batch_size],
                layer=layer,
                **params,
            )
            for i in range(0, images.shape[0], batch_size)
        ]
        return torch.cat(out).flatten(1)

    reference = maps_of(model)
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
    correlation = [torch.ones(images.shape[0], dtype=torch.float64, device=images.device)]
    for k, name in enumerate(order, start=1):
        reinitialize(children[name], seed + k)
        correlation.append(spearman(reference, maps_of(randomized)))
    return RandomizationResult(["none", *order], torch.stack(correlation))
