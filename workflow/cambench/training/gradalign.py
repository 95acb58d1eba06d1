"""Gradient-aligned training: Torres Figueroa, Zhang, Sicre, Avrithis, Ayache, "A learning
paradigm for interpretable gradients", VISAPP 2024 (https://arxiv.org/abs/2404.15024).

``L = CE + λ·L_R``: ``L_R`` pulls the standard input gradient ``g = ∂y_t/∂x`` of the
ground-truth class ``t`` towards the guided-backpropagation gradient ``ĝ`` of the
same network, which is detached (a target). Both come from one forward graph
(:func:`cambench.models.guided.standard_and_guided_gradients`); ``g`` is built with
``create_graph=True`` so ``L_R`` reaches the weights (double backpropagation).

Distances, per image ``i`` then averaged over the batch:

- ``cosine`` (default, the paper's best): ``1 − cos(vec(g_i), vec(ĝ_i))``;
- ``mse`` / ``l1``: the mean squared / absolute difference of the raw gradients,
  averaged over pixels and channels. **Choice:** no per-image normalization, as the
  plain distances between gradients; unlike the cosine they therefore also pull the
  gradient's magnitude towards the guided one, and their scale (gradients of a logit
  with respect to pixels, typically 1e-3…1e-1) makes a useful ``λ`` much larger than
  the cosine's.

During training the model is in train mode, so batch norm uses batch statistics and
``g_i`` carries the (small) cross-image terms of those statistics, as in ordinary
double-backpropagation training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cambench.models.guided import check_guidable, standard_and_guided_gradients

DISTANCES = ("cosine", "mse", "l1")


def gradient_distance(g: torch.Tensor, target: torch.Tensor, distance: str) -> torch.Tensor:
    """Mean over the batch of the per-image distance between ``g`` and ``target``."""
    if distance == "cosine":
        return (1 - F.cosine_similarity(g.flatten(1), target.flatten(1), dim=1)).mean()
    if distance == "mse":
        return F.mse_loss(g, target)
    if distance == "l1":
        return F.l1_loss(g, target)
    raise ValueError(f"unknown distance {distance!r}; valid: {', '.join(DISTANCES)}")


@dataclass
class CrossEntropyObjective:
    """Plain cross-entropy (baseline and CA-Stream training), optionally label-smoothed."""

    label_smoothing: float = 0.0

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return loss, logits, {"ce": loss}


@dataclass
class GradAlignObjective:
    """``CE + λ·d(∂y_t/∂x, guided ∂y_t/∂x)``; returns ``(loss, logits, parts)``.

    ``label_smoothing`` smooths the cross-entropy only (the alignment term uses the
    ground-truth class ``t``).
    """

    lam: float = 7.5e-3
    distance: str = "cosine"
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.distance not in DISTANCES:
            raise ValueError(f"unknown distance {self.distance!r}; valid: {', '.join(DISTANCES)}")
        if self.lam < 0:
            raise ValueError(f"lambda must be >= 0, got {self.lam}")

    def check(self, model: nn.Module) -> None:
        """ValueError before training if guided backprop is undefined for ``model``."""
        check_guidable(model)

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        logits, g, guided = standard_and_guided_gradients(model, images, labels, create_graph=True)
        ce = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        reg = gradient_distance(g, guided, self.distance)
        return ce + self.lam * reg, logits, {"ce": ce, "reg": reg}


def gradient_cosine(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean cosine between the standard and guided input gradients of ``labels``.

    Evaluated in eval mode (restored afterwards); the parameters' ``.grad`` are not
    touched. NaN when guided backpropagation is undefined for the model.
    """
    try:
        check_guidable(model)
    except ValueError:
        return float("nan")
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        _, g, guided = standard_and_guided_gradients(model, images, labels)
    finally:
        for m, mode in modes.items():
            m.training = mode
    return float(F.cosine_similarity(g.flatten(1), guided.flatten(1), dim=1).mean())
