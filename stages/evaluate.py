"""Evaluation on the test set: loss, accuracy, per-class precision/recall/F1, confusion matrix."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class EvalResult:
    """Everything measured on the test set."""

    loss: float
    accuracy: float
    confusion: np.ndarray  # rows: true class, columns: predicted class
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    class_names: tuple[str, ...]
    predicted: np.ndarray | None = None  # the predicted class of each test image, in order

    def report(self) -> str:
        """A classification report in the familiar scikit-learn layout."""
        width = max(len(n) for n in (*self.class_names, "weighted avg"))
        head = f"{'':>{width}}  precision    recall  f1-score   support"
        rows = [head, ""]
        for i, name in enumerate(self.class_names):
            rows.append(
                f"{name:>{width}}  {self.precision[i]:9.4f} {self.recall[i]:9.4f} "
                f"{self.f1[i]:9.4f} {int(self.support[i]):9d}"
            )
        total = int(self.support.sum())
        w = self.support / max(total, 1)
        rows += [
            "",
            f"{'accuracy':>{width}}  {'':9} {'':9} {self.accuracy:9.4f} {total:9d}",
            f"{'macro avg':>{width}}  {self.precision.mean():9.4f} {self.recall.mean():9.4f} "
            f"{self.f1.mean():9.4f} {total:9d}",
            f"{'weighted avg':>{width}}  {(self.precision * w).sum():9.4f} "
            f"{(self.recall * w).sum():9.4f} {(self.f1 * w).sum():9.4f} {total:9d}",
        ]
        return "\n".join(rows) + "\n"


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts of (true, predicted) pairs, as an int64 matrix."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def per_class_scores(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 and support per class; 0 where a ratio is undefined."""
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
    return precision, recall, f1, support


def evaluate_model(
    model: Any,
    x_test: np.ndarray,
    y_test: np.ndarray,
    class_names: Sequence[str],
    *,
    batch_size: int = 256,
) -> EvalResult:
    """Everything from one pass of predictions: loss (sparse categorical cross-entropy, as
    Keras computes it from probabilities), accuracy, per-class scores, each image's class.

    Only `predict` is called, so a model loaded without its training configuration (not
    compiled) is scored the same as one that is.
    """
    probs = np.asarray(model.predict(x_test, batch_size=batch_size, verbose=0), np.float64)
    labels = np.asarray(y_test, dtype=np.int64)
    predicted = np.argmax(probs, axis=1)
    eps = 1e-7  # keras.backend.epsilon(): what Keras clips probabilities to
    picked = np.clip(probs[np.arange(len(labels)), labels], eps, 1 - eps)
    loss = float(-np.log(picked).mean()) if len(labels) else float("nan")
    cm = confusion_matrix(labels, predicted, len(class_names))
    precision, recall, f1, support = per_class_scores(cm)
    return EvalResult(
        loss=loss,
        accuracy=float((predicted == labels).mean()) if len(labels) else float("nan"),
        predicted=predicted,
        confusion=cm,
        precision=precision,
        recall=recall,
        f1=f1,
        support=support,
        class_names=tuple(class_names),
    )


# -- each test image's prediction, kept with the run: any two runs can be paired later --------

PREDICTIONS_HEADER = "index,label,predicted"


def digest_of_test_set(x_test: np.ndarray, y_test: np.ndarray) -> str:
    """SHA-256 of the test images and labels as scored: two runs share it only if they were
    tested on the very same images, in the same order (their predictions then pair up)."""
    h = hashlib.sha256()
    for arr in (x_test, y_test):
        h.update(str(arr.dtype).encode())  # 0.5 as float32 and as float64 differ in bytes
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def predictions_csv(labels: np.ndarray, predicted: np.ndarray) -> str:
    """Each test image's label and predicted class as CSV (index,label,predicted)."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    if labels.shape != predicted.shape:
        raise ValueError(f"{labels.shape} labels but {predicted.shape} predictions")
    rows = (
        f"{i},{int(y)},{int(p)}" for i, (y, p) in enumerate(zip(labels, predicted, strict=True))
    )
    return "\n".join([PREDICTIONS_HEADER, *rows]) + "\n"


def parse_predictions(text: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predicted) from predictions_csv's text; ValueError if it is not that."""
    lines = text.strip().splitlines()
    if not lines or lines[0] != PREDICTIONS_HEADER:
        raise ValueError(f"not a predictions file (header {lines[:1]})")
    table = np.array([line.split(",") for line in lines[1:]], dtype=np.int64).reshape(-1, 3)
    if not np.array_equal(table[:, 0], np.arange(len(table))):
        raise ValueError("predictions file: indices are not 0, 1, 2, ... in order")
    return table[:, 1], table[:, 2]
