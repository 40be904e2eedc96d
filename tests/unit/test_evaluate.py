"""Evaluation metrics computed by hand on small cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fmnist.stages.evaluate import (
    PREDICTIONS_HEADER,
    EvalResult,
    confusion_matrix,
    digest_of_test_set,
    evaluate_model,
    parse_predictions,
    per_class_scores,
    predictions_csv,
)


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


def test_report_layout_and_weighted_averages_by_hand():
    # Supports 4 and 2, so the weighted averages differ from the macro ones.
    cm = np.array([[3, 1], [0, 2]])
    p, r, f, s = per_class_scores(cm)
    report = EvalResult(0.3, 5 / 6, cm, p, r, f, s, ("Bag", "Ankle boot")).report()
    assert report.splitlines() == [
        "              precision    recall  f1-score   support",
        "",
        "         Bag     1.0000    0.7500    0.8571         4",
        "  Ankle boot     0.6667    1.0000    0.8000         2",
        "",
        "    accuracy                         0.8333         6",
        "   macro avg     0.8333    0.8750    0.8286         6",
        "weighted avg     0.8889    0.8333    0.8381         6",
    ]
    assert report.endswith("\n")


def test_report_widens_for_a_long_class_name():
    cm = np.array([[1, 0], [0, 1]])
    p, r, f, s = per_class_scores(cm)
    name = "A very long class name"
    lines = EvalResult(0.1, 1.0, cm, p, r, f, s, (name, "b")).report().splitlines()
    assert lines[2].startswith(name + "  ")
    assert lines[3].startswith(" " * (len(name) - 1) + "b  ")


def test_report_of_an_empty_test_set_does_not_divide_by_zero():
    cm = np.zeros((2, 2), dtype=np.int64)
    p, r, f, s = per_class_scores(cm)
    report = EvalResult(0.0, 0.0, cm, p, r, f, s, ("a", "b")).report()
    assert report.splitlines()[-1] == "weighted avg     0.0000    0.0000    0.0000         0"


def test_confusion_matrix_has_every_class_even_unseen_ones():
    cm = confusion_matrix(np.array([1, 1]), np.array([1, 0]), 4)
    assert cm.shape == (4, 4) and cm.dtype == np.int64
    assert cm.sum() == 2 and cm[1, 1] == 1 and cm[1, 0] == 1


def test_repeated_pairs_are_all_counted():
    cm = confusion_matrix(np.array([2, 2, 2]), np.array([0, 0, 0]), 3)
    assert cm[2, 0] == 3


class FixedModel:
    """A stand-in for a trained Keras model: fixed class probabilities, and no evaluate()
    (a model loaded uncompiled has none that works)."""

    def __init__(self, probs: np.ndarray) -> None:
        self.probs = probs
        self.calls: list[tuple[str, int, int]] = []

    def predict(self, x, *, batch_size: int, verbose: int):
        self.calls.append(("predict", batch_size, verbose))
        return self.probs


def test_evaluate_model_scores_the_predicted_classes():
    # Four images, three classes; predictions are the argmax of each row.
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
    y_test = np.array([0, 1, 2, 2])
    model = FixedModel(probs)
    result = evaluate_model(model, np.zeros((4, 28, 28, 1)), y_test, ["a", "b", "c"])
    assert result.accuracy == 0.75
    # Sparse categorical cross-entropy: the mean of -log p(true class).
    assert result.loss == pytest.approx(-np.log([0.7, 0.8, 0.8, 0.1]).mean())
    assert isinstance(result.loss, float) and isinstance(result.accuracy, float)
    assert result.predicted.tolist() == [0, 1, 2, 0]
    assert result.confusion.tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert result.recall.tolist() == [1.0, 1.0, 0.5]
    assert result.precision.tolist() == [0.5, 1.0, 1.0]
    assert result.support.tolist() == [1, 1, 2]
    assert result.class_names == ("a", "b", "c")
    # Silent, in batches of the default size.
    assert model.calls == [("predict", 256, 0)]


def test_evaluate_model_passes_the_batch_size():
    model = FixedModel(np.eye(2))
    evaluate_model(model, np.zeros((2, 28, 28, 1)), np.array([0, 1]), ["a", "b"], batch_size=7)
    assert [c[1] for c in model.calls] == [7]


def test_weighted_averages_of_a_single_sample():
    cm = np.array([[1, 0], [0, 0]])
    p, r, f, s = per_class_scores(cm)
    report = EvalResult(0.1, 1.0, cm, p, r, f, s, ("a", "b")).report()
    assert report.splitlines()[-1] == "weighted avg     1.0000    1.0000    1.0000         1"


def test_labels_of_a_float_dtype_are_counted_as_classes():
    cm = confusion_matrix(np.array([0.0, 1.0, 1.0]), np.array([1.0, 1.0, 0.0]), 2)
    assert cm.tolist() == [[0, 1], [1, 1]]


def test_undefined_ratios_are_zero_without_a_warning():
    cm = np.array([[2, 0, 0], [0, 0, 0], [1, 0, 0]])  # class 1 never seen; class 2 never right
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        precision, recall, f1, _ = per_class_scores(cm)
    assert precision.tolist() == [2 / 3, 0.0, 0.0]
    assert recall.tolist() == [1.0, 0.0, 0.0]
    assert f1.tolist() == pytest.approx([0.8, 0.0, 0.0])


def test_f1_of_a_half_right_class():
    # precision 0.5 and recall 0.5: F1 is 0.5 (their sum is not above 1).
    cm = np.array([[1, 1], [1, 1]])
    _, _, f1, _ = per_class_scores(cm)
    assert f1.tolist() == pytest.approx([0.5, 0.5])


def test_evaluate_model_reports_f1_per_class():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    result = evaluate_model(FixedModel(probs), np.zeros((3, 28, 28, 1)), np.array([0, 1, 1]), "ab")
    assert result.f1.tolist() == pytest.approx([2 / 3, 2 / 3])


def test_a_certain_wrong_answer_costs_a_bounded_loss():
    # Keras clips probabilities to [1e-7, 1 - 1e-7]: a zero probability for the true class
    # costs -log(1e-7), not infinity.
    result = evaluate_model(FixedModel(np.array([[1.0, 0.0]])), np.zeros((1, 28, 28, 1)), [1], "ab")
    assert result.loss == pytest.approx(-np.log(1e-7))
    assert result.accuracy == 0.0


def test_an_uncompiled_keras_model_is_scored_like_a_compiled_one():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, size=64)
    uncompiled = evaluate_model(model, x, y, "abc")  # no compile(): evaluate() would raise
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    keras_loss, keras_accuracy = model.evaluate(x, y, verbose=0)
    assert uncompiled.accuracy == pytest.approx(keras_accuracy)
    assert uncompiled.loss == pytest.approx(keras_loss, rel=1e-5)


# -- each image's prediction, kept with the run ------------------------------------------------


def test_predictions_round_trip_as_csv():
    labels, predicted = np.array([3, 1, 9], np.int32), np.array([3, 7, 9])
    text = predictions_csv(labels, predicted)
    assert text == "index,label,predicted\n0,3,3\n1,1,7\n2,9,9\n"
    back_labels, back_predicted = parse_predictions(text)
    assert back_labels.tolist() == [3, 1, 9] and back_predicted.tolist() == [3, 7, 9]
    assert PREDICTIONS_HEADER == "index,label,predicted"


def test_no_predictions_round_trip_too():
    text = predictions_csv(np.array([], np.int32), np.array([], np.int64))
    assert text == "index,label,predicted\n"
    labels, predicted = parse_predictions(text)
    assert labels.shape == predicted.shape == (0,)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a predictions file"),
        ("a,b,c\n0,1,1\n", "not a predictions file"),
        ("index,label,predicted\n1,3,3\n0,1,1\n", "not 0, 1, 2"),
        ("index,label,predicted\n0,3,3\n2,1,1\n", "not 0, 1, 2"),
    ],
)
def test_a_file_that_is_not_predictions_is_refused(text, message):
    with pytest.raises(ValueError, match=message):
        parse_predictions(text)


def test_predictions_need_one_per_label():
    with pytest.raises(ValueError, match=r"\(3,\) labels but \(2,\) predictions"):
        predictions_csv(np.array([1, 2, 3]), np.array([1, 2]))


def test_the_test_set_digest_tells_images_labels_order_and_dtype_apart():
    x = np.arange(12, dtype=np.float32).reshape(3, 2, 2, 1) / 12
    y = np.array([0, 1, 2], np.int32)
    d = digest_of_test_set(x, y)
    assert len(d) == 64 and d == digest_of_test_set(x.copy(), y.copy())
    assert digest_of_test_set(x[::-1], y[::-1]) != d  # the same images in another order
    assert digest_of_test_set(x, np.array([0, 1, 3], np.int32)) != d
    assert digest_of_test_set(x.astype(np.float64), y) != d
    assert digest_of_test_set(x, y.astype(np.int64)) != d
    assert digest_of_test_set(np.ascontiguousarray(x[::-1])[::-1], y) == d  # a view: same bytes
    import hashlib

    h = hashlib.sha256()
    for arr in (x, y):
        h.update(str(arr.dtype).encode())
        h.update(arr.tobytes())
    assert d == h.hexdigest()
