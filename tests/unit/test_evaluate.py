"""Evaluation metrics computed by hand on small cases."""

from __future__ import annotations

import numpy as np
import pytest

from stages.evaluate import EvalResult, confusion_matrix, per_class_scores


def test_confusion_matrix_counts_true_by_predicted():
    y_true = np.array([0, 0, 1, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 2])
    assert confusion_matrix(y_true, y_pred, 3).tolist() == [[1, 1, 0], [0, 2, 1], [0, 0, 1]]


def test_precision_recall_f1_by_hand():
    cm = np.array([[1, 1, 0], [0, 2, 1], [0, 0, 1]])
    precision, recall, f1, support = per_class_scores(cm)
    assert precision == pytest.approx([1.0, 2 / 3, 0.5])
    assert recall == pytest.approx([0.5, 2 / 3, 1.0])
    assert f1 == pytest.approx([2 / 3, 2 / 3, 2 / 3])
    assert support.tolist() == [2, 3, 1]


def test_undefined_ratios_are_zero_not_nan():
    cm = np.array([[2, 0], [0, 0]])  # class 1 never true, never predicted
    precision, recall, f1, _ = per_class_scores(cm)
    assert precision.tolist() == [1.0, 0.0] and recall.tolist() == [1.0, 0.0]
    assert f1.tolist() == [1.0, 0.0]


def test_report_lists_every_class_and_the_averages():
    cm = np.array([[3, 1], [0, 4]])
    p, r, f, s = per_class_scores(cm)
    result = EvalResult(0.3, 7 / 8, cm, p, r, f, s, ("Bag", "Ankle boot"))
    report = result.report()
    for needle in ("Bag", "Ankle boot", "macro avg", "weighted avg", "0.8750"):
        assert needle in report
