"""Training one model: the `train-model` flow (one per model on the training work pool), and
`train_one`, which the pipeline also calls inline.

The `train-model` flow is what the gpu work pool runs, one flow run (so one process) per
model: GPU memory is not released between models inside one process. It gets everything by
value or by reference it can verify: the resolved config, the dataset's URI and SHA-256 in
the dataset store, and the MLflow parent run id (never the thread-local active run).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fmnist.conf import Config, config_from_dict
from fmnist.stages.backend import apply_backend, resolve_backend
from fmnist.stages.compare import describe_model
from fmnist.stages.load import Dataset
from fmnist.stages.models import REGISTRY, get_spec
from fmnist.stages.store import DatasetRef, fetch_dataset
from fmnist.stages.train import backend_and_device
from fmnist.tasks.evaluate import evaluate
from fmnist.tasks.train import train
from fmnist.tracking import Tracker, tracker_for
from fmnist.tracking.provenance import provenance_tags
from prefect import flow, get_run_logger

TRAIN_FLOW_NAME = "train-model"
ENTRYPOINT = "flows/train_model.py:train_model_flow"


@dataclass(frozen=True)
class Augmented:
    """Augmented training images, with the SHA-256 of the file they were stored in."""

    x: np.ndarray
    y: np.ndarray
    sha256: str


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


def combined_digest(base: str, augmented_sha256: str) -> str:
    """Digest of originals + augmented images, for the augmented model's training set."""
    return hashlib.sha256(f"{base}+{augmented_sha256}".encode()).hexdigest()


def log_datasets(
    tracker: Tracker,
    run_id: str,
    cfg: Config,
    ds: Dataset,
    x_train: np.ndarray,
    y_train: np.ndarray,
    train_name: str,
    train_digest: str,
) -> None:
    """Record the training set (as given) and the test set as MLflow dataset inputs."""
    for x, y, name, digest, context in (
        (x_train, y_train, train_name, train_digest, "training"),
        (ds.x_test, ds.y_test, "fashion-mnist-test", ds.digest, "evaluation"),
    ):
        tracker.log_dataset(
            run_id, x, y, name=name, digest=digest, context=context, source=cfg.data.cache_dir
        )


def train_one(
    cfg: Config,
    name: str,
    ds: Dataset,
    augmented: Augmented | None,
    tracker: Tracker,
    parent_run_id: str,
) -> TrainingOutcome:
    """Train and evaluate one model as a child run of parent_run_id.

    The child run ends FAILED with the reason on any error, which then propagates: the
    caller decides whether the other models go on.
    """
    logger = get_run_logger()
    spec = get_spec(name)
    x, y, train_digest = ds.x_train, ds.y_train, ds.digest
    if spec.augmented:
        if augmented is None:
            raise ValueError(f"{name} trains on augmented images, but none were provided")
        # Originals first, then augmented, as the chapter concatenated them; Keras'
        # validation_split then takes the last quarter (mostly augmented images).
        x = np.concatenate([ds.x_train, augmented.x])
        y = np.concatenate([ds.y_train, augmented.y])
        train_digest = combined_digest(ds.digest, augmented.sha256)
    env = backend_and_device()
    tags = {
        **provenance_tags(ENTRYPOINT, cfg.model_dump(), ds.digest),
        "model": name,
        "profile": cfg.profile,
        "chapter_test_accuracy": spec.chapter_test_accuracy,
        "chapter_params": spec.chapter_params,
    }
    # A resumed pipeline run: a model already trained is not trained again; one whose run
    # was cut short goes on in that same run, from its last checkpoint.
    earlier = tracker.child_runs(parent_run_id).get(name)
    if earlier is not None and earlier.info.status == "FINISHED":
        accuracy = earlier.data.metrics.get("test_accuracy")
        if accuracy is not None:
            logger.info("%s: trained already, in run %s", name, earlier.info.run_id)
            return TrainingOutcome(name, earlier.info.run_id, accuracy)
    resume = earlier.info.run_id if earlier is not None else None
    checkpoints = Path(cfg.train.checkpoint_dir) / parent_run_id / name
    started = time.perf_counter()
    with tracker.run(name, parent_run_id=parent_run_id, tags=tags, resume=resume) as child:
        tracker.log_params(
            child,
            {
                # The whole config on every child: the compare view then has the same
                # columns for all four.
                **cfg.flat(),
                "model": name,
                "architecture": spec.description,
                "augmented": spec.augmented,
                "dataset_digest": ds.digest,
                "seed": cfg.seed,
                "keras_backend": env["backend"],
                "device": env["device"],
            },
        )
        if resume is None:  # a resumed run has them already
            train_name = "fashion-mnist-train" + ("+augmented" if spec.augmented else "")
            log_datasets(tracker, child, cfg, ds, x, y, train_name, train_digest)
        # CPU, memory and GPU use sampled into the run meanwhile: starved or saturated?
        with tracker.system_metrics(child, cfg.tracking.system_metrics_interval_s):
            trained = train(name, x, y, cfg.train, cfg.seed, tracker, child, checkpoints)
            result = evaluate(
                name, trained.model, ds, cfg.train, tracker, child, cfg.tracking.log_models
            )
        tracker.set_description(
            child,
            describe_model(
                name,
                spec.description,
                {
                    "Adam": f"lr {cfg.train.learning_rate}",
                    "epochs": cfg.train.epochs,
                    "batch": cfg.train.batch_size,
                    "validation split": cfg.train.validation_split,
                    "training images": len(y),
                },
                result.accuracy,
                spec.chapter_test_accuracy,
                spec.chapter_params,
            ),
        )
    shutil.rmtree(checkpoints, ignore_errors=True)  # the run is FINISHED: nothing to resume
    logger.info("%s done in %.0f s", name, time.perf_counter() - started)
    return TrainingOutcome(name, child, result.accuracy)


def _dataset_from_store(arrays: dict[str, Any]) -> tuple[Dataset, Augmented | None]:
    ds = Dataset(
        x_train=arrays["x_train"],
        y_train=arrays["y_train"],
        x_test=arrays["x_test"],
        y_test=arrays["y_test"],
        digest=str(arrays["digest"]),
    )
    if "x_aug" not in arrays:
        return ds, None
    return ds, Augmented(arrays["x_aug"], arrays["y_aug"], str(arrays["augmented_sha256"]))


@flow(name=TRAIN_FLOW_NAME, flow_run_name="{model_name}", log_prints=True)
def train_model_flow(
    model_name: str,
    dataset_uri: str,
    dataset_sha256: str,
    parent_run_id: str,
    config: dict[str, Any],
) -> TrainingOutcome:
    """Train and evaluate one model on a prepared dataset.

    Args:
        model_name: A registry name: conv_only, pool_dropout, vgg or vgg_augmented.
        dataset_uri: The prepared dataset in the dataset store (folder path or fsspec URL).
        dataset_sha256: Its SHA-256; the file is verified against it before training.
        parent_run_id: The MLflow run the model's run is nested under.
        config: The pipeline's resolved configuration.
    """
    logger = get_run_logger()
    get_spec(model_name)  # an unknown name fails first, with the names there are
    cfg = config_from_dict(config, known_models=REGISTRY)
    apply_backend(resolve_backend(cfg.keras_backend))  # before anything imports keras
    ds, augmented = _dataset_from_store(fetch_dataset(DatasetRef(dataset_uri, dataset_sha256)))
    logger.info("dataset %s verified (sha256 %s)", dataset_uri, dataset_sha256[:12])
    tracker = tracker_for(cfg.tracking)  # bounded calls, a spool for outages
    return train_one(cfg, model_name, ds, augmented, tracker, parent_run_id)
