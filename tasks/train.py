"""The train task: build a registry model and fit it (stages/train.py), epochs logged live."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from fmnist.conf import TrainConfig
from fmnist.stages import plots
from fmnist.stages.models import build_model, get_spec
from fmnist.stages.train import FitParams, TrainResult, build_for_training, train_model
from fmnist.tasks import artifact_key, keys
from fmnist.tracking import Tracker


@dataclass(frozen=True)
class TrainingOutcome:
    """What training one model came to, the same whether it ran inline or on a worker."""

    model: str
    run_id: str | None = None
    test_accuracy: float | None = None
    failure: str | None = None

    @property
    def ok(self) -> bool:
        """Trained and scored."""
        return self.failure is None and self.test_accuracy is not None


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
    checkpoint_dir: Path | None = None,
    reopened: bool = False,
) -> TrainResult:
    """Build the model from the registry and fit it, logging each epoch to MLflow as it ends.

    With checkpoint_dir, each epoch is checkpointed and a checkpoint found there is resumed
    from, into the same run: an epoch already logged is not logged twice. reopened: the run
    is one an earlier attempt started (only then are its logged epochs read back, so a new
    run needs nothing from the server to start).
    """
    logger = get_run_logger()
    params = FitParams.of(cfg.model_dump())
    # Seeded (the initial weights depend on it) and built under the precision policy.
    model = build_for_training(lambda: build_model(model_name), params, seed)
    spec = get_spec(model_name)
    tracker.log.params(run_id, {keys.PARAM_COUNT: model.count_params()})
    tracker.log.text(run_id, model_summary(model), "model_summary.txt")
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

    # Epochs this run logged before a kill: a resumed fit may train the last one again (its
    # checkpoint comes after its metrics), and the run keeps one value per epoch.
    logged = set(tracker.logged_steps(run_id, keys.EPOCH_SECONDS)) if reopened else set()

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if epoch not in logged:
            tracker.log.metrics(run_id, metrics, step=epoch)
        update_progress_artifact(progress_id, 100.0 * epoch / cfg.epochs)

    result = train_model(
        model,
        x,
        y,
        params,
        on_epoch=on_epoch,
        progress=lambda msg: logger.info("%s %s", model_name, msg),
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        on_warning=lambda msg: logger.warning("%s %s", model_name, msg),
    )
    if result.initial_epoch:
        logger.info("%s: resumed after epoch %d", model_name, result.initial_epoch)
        # The curves span the epochs of every process that trained this run.
        result.history = {key: tracker.metric_history(run_id, key) for key in keys.HISTORY_KEYS}
    tracker.log.params(
        run_id, {keys.TRAIN_SAMPLES: result.train_samples, keys.VAL_SAMPLES: result.val_samples}
    )
    tracker.log.metrics(
        run_id,
        {
            keys.TRAINING_SECONDS: result.seconds,
            keys.SAMPLES_PER_SECOND: result.samples_per_second,
        },
    )
    tracker.log.figure(
        run_id,
        plots.learning_curves(result.history, f"{model_name}: learning curves"),
        "learning_curves.png",
    )
    return result
