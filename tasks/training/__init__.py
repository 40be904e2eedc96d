"""Training stage: fit loop, per-epoch reporting, and evaluation (keras + numpy only)."""

from tasks.training.evaluate import EvalResult, confusion_matrix, evaluate_model, per_class_scores
from tasks.training.fit import (
    FitParams,
    TrainResult,
    backend_and_device,
    seed_everything,
    train_model,
)

__all__ = [
    "EvalResult",
    "FitParams",
    "TrainResult",
    "backend_and_device",
    "confusion_matrix",
    "evaluate_model",
    "per_class_scores",
    "seed_everything",
    "train_model",
]
