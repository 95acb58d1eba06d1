"""The area under an insertion/deletion curve: one trapezoid rule for the metrics
(torch tensors) and the figures (numpy arrays). Imports neither torch nor numpy, so
the plots can use it without loading torch."""

from __future__ import annotations

from typing import TypeVar

Curves = TypeVar("Curves")


def trapezoid_auc(curves: Curves) -> Curves:
    """Area under each curve of ``curves`` (..., T + 1) sampled at ``linspace(0, 1, T + 1)``,
    by the trapezoid rule: ``(sum(C) - (C_0 + C_T) / 2) / T``, shape (...).

    The one AUC of cambench, for the metrics (torch tensors, bit-identical to
    ``torch.trapezoid(curves, dx=1 / T, dim=-1)``) and the figures (numpy arrays,
    without converting them).

    Example::
        >>> import torch
        >>> from cambench.auc import trapezoid_auc
        >>> trapezoid_auc(torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 1.0]]))  # T = 2
        tensor([0.5000, 0.7500])
    """
    if curves.ndim < 1 or curves.shape[-1] < 2:
        raise ValueError(
            f"curves must have at least two points on the last axis, got shape "
            f"{tuple(curves.shape)}"
        )
    dx = 1.0 / (curves.shape[-1] - 1)
    return (curves.sum(-1) - (curves[..., 0] + curves[..., -1]) * 0.5) * dx
