"""Training loops (standard baseline for now)."""

from cambench.training.loop import TrainConfig, evaluate_accuracy, train_model

__all__ = ["TrainConfig", "evaluate_accuracy", "train_model"]
