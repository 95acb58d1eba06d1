"""Training: one resumable loop, with cross-entropy or gradient-aligned objectives, on
one process or data-parallel on several (:mod:`cambench.training.distributed`)."""

from cambench.training.gradalign import (
    DISTANCES,
    CrossEntropyObjective,
    GradAlignObjective,
    gradient_cosine,
    gradient_distance,
)
from cambench.training.loop import (
    OPTIMIZERS,
    SCHEDULES,
    TrainConfig,
    TrainConfigError,
    build_optimizer,
    effective_augment,
    evaluate_accuracy,
    lr_factor,
    optimizer_record,
    train_model,
    uses_nesterov,
)

__all__ = [
    "DISTANCES",
    "OPTIMIZERS",
    "SCHEDULES",
    "CrossEntropyObjective",
    "GradAlignObjective",
    "TrainConfig",
    "TrainConfigError",
    "build_optimizer",
    "effective_augment",
    "evaluate_accuracy",
    "gradient_cosine",
    "gradient_distance",
    "lr_factor",
    "optimizer_record",
    "train_model",
    "uses_nesterov",
]
