"""cambench: a reproducible benchmark for saliency-map interpretability."""

__version__ = "0.1.0"
