"""Metrics that score saliency maps: faithfulness (AD, AI, AG, insertion,
deletion) and localization (pointing game, energy-based pointing game).

Definitions in ``REFERENCES.md`` (section Metrics).
"""

from cambench.metrics.faithfulness import (
    DEFAULT_BLUR_KERNEL,
    DEFAULT_BLUR_SIGMA,
    SUBSTRATES,
    ConfidenceChange,
    InsertionDeletion,
    confidence_change,
    insertion_deletion,
    make_substrate,
    step_pixel_counts,
)
from cambench.metrics.localization import Localization, localization

__all__ = [
    "DEFAULT_BLUR_KERNEL",
    "DEFAULT_BLUR_SIGMA",
    "SUBSTRATES",
    "ConfidenceChange",
    "InsertionDeletion",
    "Localization",
    "confidence_change",
    "insertion_deletion",
    "localization",
    "make_substrate",
    "step_pixel_counts",
]
