"""Maps that say nothing: flagged per image, so no table or figure scores them as if
they did.

A raw map ``S`` is **all zero** when ``ReLU(S)`` (where the method applies ReLU) is zero
everywhere, and **constant** when its range is below ``RELATIVE_RANGE`` times its
magnitude: min-max normalization turns the first into an all-zero map and the second
into float rounding noise stretched to [0, 1], which the metrics would score like a
real map. A target layer whose output is smaller than ``MIN_LAYER_SIZE`` ×
``MIN_LAYER_SIZE`` gives only such maps (one position upsampled is a constant) and is
refused before any map is computed (:func:`check_layer_size`).

>>> import torch
>>> raw = torch.stack([torch.rand(4, 4), torch.full((4, 4), 3.0), -torch.rand(4, 4)])
>>> classify(raw, relu=True).tolist()  # fine, constant, all zero after ReLU
[0, 2, 1]
"""

from __future__ import annotations

import torch

from cambench.models.layers import MIN_LAYER_SIZE, check_layer_size  # noqa: F401

#: A raw map whose range is below this fraction of its largest magnitude is constant
#: (float32 rounding of a constant map stays below 1e-6 of it).
RELATIVE_RANGE = 1e-5

OK, ALL_ZERO, CONSTANT = 0, 1, 2
REASONS = {ALL_ZERO: "all zero", CONSTANT: "constant"}


@torch.no_grad()
def classify(raw: torch.Tensor, relu: bool) -> torch.Tensor:
    """(B,) uint8 codes of raw maps (B, h, w): :data:`OK`, :data:`ALL_ZERO` or
    :data:`CONSTANT`, computed in float64 on the maps' device."""
    s = raw.detach().to(torch.float64).flatten(1)
    if relu:
        s = s.clamp_min(0)
    hi, lo = s.amax(1), s.amin(1)
    scale = torch.maximum(hi.abs(), lo.abs())
    codes = torch.zeros(s.shape[0], dtype=torch.uint8, device=s.device)
    codes[(hi - lo) <= RELATIVE_RANGE * scale] = CONSTANT
    codes[scale == 0] = ALL_ZERO
    return codes
