"""The train task: build a registry model and fit it (stages/train.py), epochs logged live."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from conf import TrainConfig
from stages import plots
from stages.models import build_model, get_spec
from stages.train import FitParams, TrainResult, seed_everything, train_model
from tasks import artifact_key
from tracking import Tracker


def model_summary(model: Any) -> str:
    """Keras' model summary as plain text."""
    out = io.StringIO()
    model.summary(print_fn=lambda text, **_: out.write(text + "\n"))
    return out.getvalue()


@task(name="train", task_run_name="train-{model_name}", cache_policy=NO_CACHE)
def train(
    model_name: str,
    x: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    seed: int,
    tracker: Tracker,
    run_id: str,
) -> TrainResult:
    """Build the model from the registry and fit it, logging each epoch to MLflow as it ends."""
    logger = get_run_logger()
    seed_everything(seed)  # before building: the initial weights depend on it
    model = build_model(model_name)
    spec = get_spec(model_name)
    tracker.log_params(run_id, {"param_count": model.count_params()})
    tracker.log_text(run_id, model_summary(model), "model_summary.txt")
    logger.info(
        "%s: %s parameters (chapter: %s), %d samples, %d epochs, batch %d",
        model_name,
        f"{model.count_params():,}",
        f"{spec.chapter_params:,}",
        len(y),
        cfg.epochs,
        cfg.batch_size,
    )
    # A progress bar on the flow run's Artifacts tab, moved after each epoch.
    progress_id = create_progress_artifact(
        0.0,
        key=f"training-{artifact_key(model_name)}",
        description=f"{model_name}: epochs done (%)",
    )

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        tracker.log_metrics(run_id, metrics, step=epoch)
        update_progress_artifact(progress_id, 100.0 * epoch / cfg.epochs)

    result = train_model(
        model,
        x,
        y,
        FitParams.of(cfg.model_dump()),
        on_epoch=on_epoch,
        progress=lambda msg: logger.info("%s %s", model_name, msg),
        seed=seed,
    )
    tracker.log_params(
        run_id, {"train_samples": result.train_samples, "val_samples": result.val_samples}
    )
    tracker.log_metrics(
        run_id,
        {"training_seconds": result.seconds, "samples_per_second": result.samples_per_second},
    )
    tracker.log_figure(
        run_id,
        plots.learning_curves(result.history, f"{model_name}: learning curves"),
        "learning_curves.png",
    )
    return result
