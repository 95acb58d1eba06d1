"""Metrics that score saliency maps: faithfulness (AD, AI, AG, insertion,
deletion), localization (pointing game, energy-based pointing game, IoU), the
insertion/deletion protocols, the model-randomization sanity check, and the
statistics of the summary tables.

Definitions: the docstrings and ``docs/metrics.md``.
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
from cambench.metrics.protocols import PROTOCOLS, Protocol, resolve_protocol
from cambench.metrics.randomization import randomization_test, spearman
from cambench.metrics.statistics import bootstrap_mean_ci, wilcoxon_signed_rank

__all__ = [
    "DEFAULT_BLUR_KERNEL",
    "DEFAULT_BLUR_SIGMA",
    "PROTOCOLS",
    "SUBSTRATES",
    "ConfidenceChange",
    "InsertionDeletion",
    "Localization",
    "Protocol",
    "bootstrap_mean_ci",
    "confidence_change",
    "insertion_deletion",
    "localization",
    "make_substrate",
    "randomization_test",
    "resolve_protocol",
    "spearman",
    "step_pixel_counts",
    "wilcoxon_signed_rank",
]
