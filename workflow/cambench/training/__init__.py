"""Training loops: one loop, with cross-entropy or gradient-aligned objectives."""

from cambench.training.gradalign import (
    DISTANCES,
    CrossEntropyObjective,
    GradAlignObjective,
    gradient_cosine,
    gradient_distance,
)
from cambench.training.loop import TrainConfig, evaluate_accuracy, train_model

__all__ = [
    "DISTANCES",
    "CrossEntropyObjective",
    "GradAlignObjective",
    "TrainConfig",
    "evaluate_accuracy",
    "gradient_cosine",
    "gradient_distance",
    "train_model",
]
