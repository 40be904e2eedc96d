"""The evaluate task: score a trained model on the test set (stages/evaluate.py) and log it,
with each test image's prediction (predictions.csv), which any later comparison pairs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from fmnist.conf import TrainConfig
from fmnist.stages import plots
from fmnist.stages.evaluate import (
    EvalResult,
    digest_of_test_set,
    evaluate_model,
    parse_predictions,
    predictions_csv,
)
from fmnist.stages.load import CLASS_NAMES, Dataset
from fmnist.stages.models import get_spec
from fmnist.stages.significance import correct, wilson
from fmnist.tasks import keys
from fmnist.tracking import Tracker


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


@task(name="evaluate", task_run_name="evaluate-{model_name}", cache_policy=NO_CACHE)
def evaluate(
    model_name: str,
    model: Any,
    dataset: Dataset,
    cfg: TrainConfig,
    tracker: Tracker,
    run_id: str,
    log_model: bool = True,
) -> EvalResult:
    """Score on the test set; log metrics, confusion heatmap, report and the model."""
    logger = get_run_logger()
    result = evaluate_model(
        model, dataset.x_test, dataset.y_test, CLASS_NAMES, batch_size=cfg.eval_batch_size
    )
    right = int(correct(result.predicted, dataset.y_test).sum())
    interval = wilson(right, len(dataset.y_test))
    metrics = {
        keys.TEST_LOSS: result.loss,
        keys.TEST_ACCURACY: result.accuracy,
        keys.TEST_ACCURACY_CI_LOW: interval.low,
        keys.TEST_ACCURACY_CI_HIGH: interval.high,
    }
    metrics |= {
        f"{keys.TEST_F1}.{_slug(n)}": float(f) for n, f in zip(CLASS_NAMES, result.f1, strict=True)
    }
    tracker.log.metrics(run_id, metrics)
    tracker.log.text(run_id, predictions_csv(dataset.y_test, result.predicted), keys.PREDICTIONS)
    tracker.log.tags(
        run_id, {keys.TEST_SET_DIGEST: digest_of_test_set(dataset.x_test, dataset.y_test)}
    )
    tracker.log.text(run_id, result.report(), "classification_report.txt")
    tracker.log.dict(
        run_id,
        {"class_names": list(CLASS_NAMES), "matrix": result.confusion.tolist()},
        "confusion_matrix.json",
    )
    tracker.log.figure(
        run_id,
        plots.confusion_heatmap(
            result.confusion,
            CLASS_NAMES,
            f"{model_name}: test accuracy {result.accuracy:.4f} on {len(dataset.y_test)} images",
        ),
        "confusion_matrix.png",
    )
    if log_model:
        # Tagged with its URI on the run, for the champion step; kept in the spool if the
        # tracking server is away.
        uri = tracker.log.keras_model(run_id, model, dataset.x_test[:8])
        logger.info("%s: model logged as %s", model_name, uri or "(spooled)")
    chapter = get_spec(model_name).chapter_test_accuracy
    logger.info(
        "%s: test accuracy %.4f (95 %% CI %.4f-%.4f; chapter %.4f, %+.4f), test loss %.4f",
        model_name,
        result.accuracy,
        interval.low,
        interval.high,
        chapter,
        result.accuracy - chapter,
        result.loss,
    )
    return result


@dataclass(frozen=True)
class Predictions:
    """A run's kept predictions: each test image's label and predicted class, and the digest
    of the test set they are of."""

    labels: np.ndarray
    predicted: np.ndarray
    digest: str | None


def read_predictions(tracker: Tracker, run: Any) -> Predictions | None:
    """The predictions a model's run kept (None if it kept none: a run from before they
    were kept, or one that failed before its evaluation)."""
    text = tracker.artifact_text(run.info.run_id, keys.PREDICTIONS)
    if text is None:
        return None
    labels, predicted = parse_predictions(text)
    return Predictions(labels, predicted, run.data.tags.get(keys.TEST_SET_DIGEST))
