r"""IROF: Iterative Removal Of Features (Rieger & Hansen, 2020).

`"IROF: a low resource evaluation metric for explanation methods"
<https://arxiv.org/abs/2003.08747>`_. The image is cut into :math:`S` segments, which
are removed (replaced by the image's per-channel mean) one after the other in
descending order of their mean attribution; the curve is the target's probability
relative to the original's,

.. math:: r_k = f(x^{(k)}) / f(x), \quad k = 0, \dots, S, \qquad
          \mathrm{IROF} = 1 - \int_0^1 r = 1 - \mathrm{trapz}(r, \Delta = 1/S)

(the area over the curve on the unit square), higher is better (↑).

Segmentation: a fixed ``cells`` × ``cells`` grid (row ``floor(y · cells / H)``,
column likewise), computed batched on the device. The paper and Quantus use SLIC
superpixels (scikit-image, which cambench does not depend on); a grid is the same for
every image and method, so it scores only the map, not the segmentation.

Quantus 0.6 differs in two ways: its score is :math:`S - \mathrm{trapz}(r_1, \dots,
r_S; \Delta = 1)` (the curve without :math:`r_0`, unnormalised), and its ``mean``
baseline is the mean over the whole *batch* of the already perturbed images at each
step. The tests pass it the grid and a per-image mean and check both formulas.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cambench.metrics.draws import model_output

__all__ = ["Irof", "grid_segments", "irof"]


@dataclass
class Irof:
    """``curve`` (B, S + 1): :math:`r_0 = 1, \\dots, r_S`; ``order`` (B, S): segments
    from the most to the least attributed."""

    curve: torch.Tensor
    order: torch.Tensor

    @property
    def aoc(self) -> torch.Tensor:
        """1 - the trapezoid area under ``curve`` on [0, 1], (B,)."""
        r = self.curve
        s = r.shape[1] - 1
        return 1.0 - (r.sum(dim=1) - 0.5 * (r[:, 0] + r[:, -1])) / s


def grid_segments(height: int, width: int, cells: int, device=None) -> torch.Tensor:
    """(H, W) int64 segment labels of a ``cells`` × ``cells`` grid, row-major.

    Example::
        >>> from cambench.metrics.irof import grid_segments
        >>> grid_segments(4, 4, 2)
        tensor([[0, 0, 1, 1],
                [0, 0, 1, 1],
                [2, 2, 3, 3],
                [2, 2, 3, 3]])
    """
    if not 1 <= cells <= min(height, width):
        raise ValueError(f"cells must lie in [1, {min(height, width)}], got {cells}")
    rows = torch.arange(height, device=device) * cells // height
    cols = torch.arange(width, device=device) * cells // width
    return rows[:, None] * cells + cols[None, :]


def irof(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    maps: torch.Tensor,
    cells: int = 8,
    output: str = "probability",
    batch_size: int = 512,
) -> Irof:
    """IROF curves of each map (module docstring). Equal segment means keep the
    segments' label order.

    Example::
        >>> import torch
        >>> from cambench.metrics.irof import irof
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64, 2))
        >>> images, maps = torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8)
        >>> out = irof(model, images, torch.tensor([0, 1]), maps, cells=2)
        >>> out.curve.shape, out.aoc.shape
        (torch.Size([2, 5]), torch.Size([2]))
    """
    if images.ndim != 4 or maps.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(
            f"images must be (B, C, H, W) and maps (B, H, W), got {tuple(images.shape)} "
            f"and {tuple(maps.shape)}"
        )
    b, c, h, w = images.shape
    labels = grid_segments(h, w, cells, images.device).flatten()
    s = cells * cells
    counts = torch.bincount(labels, minlength=s).double()
    sums = torch.zeros(b, s, dtype=torch.float64, device=maps.device)
    sums.index_add_(1, labels, maps.flatten(1).double())
    order = torch.sort(sums / counts, dim=1, descending=True, stable=True).indices
    # rank[b, segment]: when the segment goes (1 = first); pixel q is gone at step k
    # when rank of its segment <= k
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(1, s + 1, device=order.device).expand(b, s))
    pixel_rank = rank[:, labels]  # (B, H·W)
    fill = images.mean(dim=(2, 3), keepdim=True).flatten(2)
    flat = images.flatten(2)
    before = model_output(model, images, targets, output, batch_size).double()
    ratios = [torch.ones(b, dtype=torch.float64, device=images.device)]
    steps_per_chunk = max(1, batch_size // max(b, 1))
    for start in range(1, s + 1, steps_per_chunk):
        steps = torch.arange(start, min(s, start + steps_per_chunk - 1) + 1, device=images.device)
        gone = pixel_rank[None] <= steps[:, None, None]  # (k, B, H·W)
        perturbed = torch.where(gone[:, :, None], fill[None], flat[None])
        after = model_output(
            model, perturbed.reshape(-1, c, h, w), targets.repeat(len(steps)), output, batch_size
        ).double()
        ratios.extend((after.reshape(len(steps), b) / before).unbind(0))
    return Irof(torch.stack(ratios, dim=1), order)
