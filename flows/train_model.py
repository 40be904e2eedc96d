"""Training one model: shared by the pipeline (inline) and the `train-model` flow (workers).

The `train-model` flow is what the gpu work pool runs, one flow run (so one process) per
model: GPU memory is not released between models inside one process. It gets everything by
value or by reference it can verify: the resolved config, the dataset's URI and SHA-256 in
the dataset store, and the MLflow parent run id (never the thread-local active run).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np
from prefect import flow, get_run_logger

from conf import Config
from flows.config import config_from_dict
from stages.backend import apply_backend, resolve_backend
from stages.compare import describe_model
from stages.load import Dataset
from stages.models import get_spec
from stages.store import DatasetRef, fetch_dataset
from stages.train import backend_and_device
from tasks import prefect_tasks as pt
from tracking import Tracker, open_tracker

TRAIN_FLOW_NAME = "train-model"


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


def train_and_log(
    cfg: Config,
    name: str,
    ds: Dataset,
    augmented: tuple[np.ndarray, np.ndarray] | None,
    augmented_sha256: str | None,
    tracker: Tracker,
    parent_run_id: str,
) -> tuple[str, float]:
    """Train and evaluate one model as a child run of parent_run_id; return (run id, accuracy).

    On any failure the child run is ended FAILED with the reason as a tag, then the error
    propagates: the caller decides whether the other models go on.
    """
    logger = get_run_logger()
    spec = get_spec(name)
    x, y = ds.x_train, ds.y_train
    if spec.augmented:
        if augmented is None or augmented_sha256 is None:
            raise ValueError(f"{name} trains on augmented images, but none were provided")
        # Originals first, then augmented, as the chapter concatenated them; Keras'
        # validation_split then takes the last quarter (mostly augmented images).
        x = np.concatenate([ds.x_train, augmented[0]])
        y = np.concatenate([ds.y_train, augmented[1]])
    env = backend_and_device()
    child = tracker.start_run(
        name,
        parent_run_id=parent_run_id,
        tags={
            "model": name,
            "profile": cfg.profile,
            "book_test_accuracy": spec.book_test_accuracy,
            "book_params": spec.book_params,
        },
    )
    started = time.perf_counter()
    try:
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
        train_name = "fashion-mnist-train" + ("+augmented" if spec.augmented else "")
        train_digest = (
            combined_digest(ds.digest, augmented_sha256)
            if spec.augmented and augmented_sha256
            else ds.digest
        )
        log_datasets(tracker, child, cfg, ds, x, y, train_name, train_digest)
        trained = pt.train(name, x, y, cfg.train, cfg.seed, tracker, child)
        result = pt.evaluate(
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
                spec.book_test_accuracy,
                spec.book_params,
            ),
        )
    except BaseException as exc:
        tracker.end_run(child, failed=True, reason=f"{type(exc).__name__}: {exc}")
        raise
    tracker.end_run(child)
    logger.info("%s done in %.0f s", name, time.perf_counter() - started)
    return child, result.accuracy


def _dataset_from_store(arrays: dict[str, Any]) -> tuple[Dataset, tuple | None, str | None]:
    ds = Dataset(
        x_train=arrays["x_train"],
        y_train=arrays["y_train"],
        x_test=arrays["x_test"],
        y_test=arrays["y_test"],
        digest=str(arrays["digest"]),
    )
    if "x_aug" not in arrays:
        return ds, None, None
    return ds, (arrays["x_aug"], arrays["y_aug"]), str(arrays["augmented_sha256"])


@flow(name=TRAIN_FLOW_NAME, flow_run_name="{model_name}", log_prints=True)
def train_model_flow(
    model_name: str,
    dataset_uri: str,
    dataset_sha256: str,
    parent_run_id: str,
    config: dict[str, Any],
) -> float:
    """Train and evaluate one model on a prepared dataset; return its test accuracy.

    Args:
        model_name: A registry name: conv_only, pool_dropout, vgg or vgg_augmented.
        dataset_uri: The prepared dataset in the dataset store (folder path or fsspec URL).
        dataset_sha256: Its SHA-256; the file is verified against it before training.
        parent_run_id: The MLflow run the model's run is nested under.
        config: The pipeline's resolved configuration.
    """
    logger = get_run_logger()
    get_spec(model_name)  # an unknown name fails first, with the names there are
    cfg = config_from_dict(config)
    apply_backend(resolve_backend(cfg.keras_backend))  # before anything imports keras
    arrays = fetch_dataset(DatasetRef(dataset_uri, dataset_sha256))
    ds, augmented, augmented_sha = _dataset_from_store(arrays)
    logger.info("dataset %s verified (sha256 %s)", dataset_uri, dataset_sha256[:12])
    tracker = open_tracker(
        cfg.tracking.tracking_uri, cfg.tracking.experiment, cfg.tracking.artifact_location
    )
    _, accuracy = train_and_log(
        cfg, model_name, ds, augmented, augmented_sha, tracker, parent_run_id
    )
    return accuracy
