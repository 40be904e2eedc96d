"""Training and evaluating one model: `train_and_evaluate`, which the pipeline calls inline,
and the `train-model` flow (one flow run, so one process, per model on the training work
pool: GPU memory is not released between models inside one process).

The flow gets everything by value or by a reference it can verify: the resolved config, the
dataset's URI and SHA-256 in the dataset store, and the MLflow parent run id (never the
thread-local active run).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, get_run_logger
from prefect.states import Cancelled, State

from fmnist.conf import Config, config_from_dict
from fmnist.flows import TRAIN_ENTRYPOINT, TRAIN_FLOW
from fmnist.stages.augment import Augmented
from fmnist.stages.backend import apply_backend, resolve_backend
from fmnist.stages.compare import describe_model
from fmnist.stages.environment import (
    KEY_PACKAGES,
    check_packages,
    installed_packages,
    packages_digest,
    packages_text,
)
from fmnist.stages.load import Dataset
from fmnist.stages.models import REGISTRY, ModelSpec, get_spec
from fmnist.stages.store import DatasetRef, unpack_dataset
from fmnist.stages.train import backend_and_device
from fmnist.tasks import dataset as dataset_store
from fmnist.tasks import keys
from fmnist.tasks.evaluate import evaluate
from fmnist.tasks.load import TRAIN_SET, log_datasets
from fmnist.tasks.resume import PipelineRun, parent_gone
from fmnist.tasks.train import TrainingOutcome, train
from fmnist.tracking import tracker_for
from fmnist.tracking.provenance import provenance_tags


def combined_digest(base: str, augmented_sha256: str) -> str:
    """Digest of originals + augmented images, for the augmented model's training set."""
    return hashlib.sha256(f"{base}+{augmented_sha256}".encode()).hexdigest()


def training_set(
    spec: ModelSpec, ds: Dataset, augmented: Augmented | None
) -> tuple[np.ndarray, np.ndarray, str, str]:
    """What a model trains on: (x, y, name, digest); originals then augmented images for an
    augmented model, as the chapter concatenated them (Keras' validation_split then takes
    the last quarter, mostly augmented images)."""
    if not spec.augmented:
        return ds.x_train, ds.y_train, TRAIN_SET, ds.digest
    if augmented is None:
        raise ValueError(f"{spec.name} trains on augmented images, but none were provided")
    x = np.concatenate([ds.x_train, augmented.x])
    y = np.concatenate([ds.y_train, augmented.y])
    return x, y, f"{TRAIN_SET}+augmented", combined_digest(ds.digest, augmented.sha256)


def train_and_evaluate(
    cfg: Config,
    name: str,
    ds: Dataset,
    augmented: Augmented | None,
    run: PipelineRun,
    key: str | None = None,
) -> TrainingOutcome:
    """Train and evaluate one model as a child run of the pipeline's run.

    A model an earlier attempt of this pipeline run finished is not trained again; one it
    cut short goes on in the same MLflow run from its last checkpoint. The child run ends
    FAILED with the reason on any error, which then propagates: the caller decides whether
    the other models go on. key: the child run's name under the parent when the parent
    trains a model more than once (a certificate: model-seedN; the seed is cfg.seed).
    """
    logger = get_run_logger()
    tracker, spec = run.tracker, get_spec(name)
    key = key or name
    start = run.model(name, key)
    if start.outcome is not None:
        logger.info("%s: trained already, in run %s", key, start.outcome.run_id)
        return start.outcome
    x, y, train_name, train_digest = training_set(spec, ds, augmented)
    env = backend_and_device()
    packages = installed_packages()  # what this run ran with, recorded on it
    tags = {
        **provenance_tags(TRAIN_ENTRYPOINT, cfg.model_dump(), ds.digest),
        keys.MODEL: name,
        keys.RUN_KEY: key,
        keys.SEED: cfg.seed,
        keys.PROFILE: cfg.profile,
        keys.CHAPTER_TEST_ACCURACY: spec.chapter_test_accuracy,
        keys.CHAPTER_PARAMS: spec.chapter_params,
        keys.PACKAGES_DIGEST: packages_digest(packages),
        **{keys.PACKAGE + p: packages[p] for p in KEY_PACKAGES if p in packages},
    }
    started = time.perf_counter()
    with tracker.run(key, parent_run_id=run.id, tags=tags, resume=start.reopen) as child:
        tracker.log.params(
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
        if start.reopen is None:  # a reopened run has them already
            log_datasets(tracker, child, ds, (x, y, train_name, train_digest), cfg.data.cache_dir)
        tracker.log.text(child, packages_text(packages), keys.PACKAGES_FILE)
        # CPU, memory and GPU use sampled into the run meanwhile: starved or saturated?
        with tracker.system_metrics(child, cfg.tracking.system_metrics_interval_s):
            trained = train(
                name, x, y, cfg.train, cfg.seed, tracker, child, start.checkpoints,
                reopened=start.reopen is not None,
            )  # fmt: skip
            result = evaluate(
                name, trained.model, ds, cfg.train, tracker, child, cfg.tracking.log_models
            )
        tracker.log.note(child, _description(cfg, spec, len(y), result.accuracy))
    shutil.rmtree(start.checkpoints, ignore_errors=True)  # FINISHED: nothing to resume
    logger.info("%s done in %.0f s", key, time.perf_counter() - started)
    # The server's id: a run that started while it was away has had a placeholder.
    return TrainingOutcome(name, tracker.log.resolve(child), result.accuracy)


def _description(cfg: Config, spec: ModelSpec, samples: int, accuracy: float) -> str:
    settings = {
        "Adam": f"lr {cfg.train.learning_rate}",
        "epochs": cfg.train.epochs,
        "batch": cfg.train.batch_size,
        "validation split": cfg.train.validation_split,
        "training images": samples,
    }
    return describe_model(
        spec.name,
        spec.description,
        settings,
        accuracy,
        spec.chapter_test_accuracy,
        spec.chapter_params,
    )


@flow(name=TRAIN_FLOW, flow_run_name="{model_name}", log_prints=True)
def train_model_flow(
    model_name: str,
    dataset_uri: str,
    dataset_sha256: str,
    parent_run_id: str,
    config: dict[str, Any],
    resumed: bool = True,
    run_key: str | None = None,
) -> TrainingOutcome | State:
    """Train and evaluate one model on a prepared dataset.

    Args:
        model_name: A registry name: conv_only, pool_dropout, vgg or vgg_augmented.
        dataset_uri: The prepared dataset: a runs:/ artifact, folder path or fsspec URL.
        dataset_sha256: Its SHA-256; the file is verified against it before training.
        parent_run_id: The MLflow run the model's run is nested under.
        config: The pipeline's resolved configuration.
        resumed: Whether the pipeline run goes on from an earlier attempt (then a run this
            model already has under the parent is looked up and finished or reopened).
        run_key: The child run's name under the parent where a parent trains a model more
            than once (a certificate: model-seedN, with the seed in config); default: the
            model's name.
    """
    logger = get_run_logger()
    # First of all: a worker whose packages are not what this commit locks would train other
    # nets in silence (requirements.lock of the clone it runs; PackageSkew names each).
    if lock := check_packages():
        logger.info("packages match %s", lock)
    get_spec(model_name)  # an unknown name fails first, with the names there are
    cfg = config_from_dict(config, known_models=REGISTRY)
    apply_backend(resolve_backend(cfg.keras_backend))  # before anything imports keras
    tracker = tracker_for(cfg.tracking)  # bounded calls, a spool for outages
    if reason := parent_gone(tracker, parent_run_id):
        # A run queued by a pipeline that has since crashed or failed: training it now
        # would hold the pool's slots for a result nobody waits for.
        logger.warning("%s: not trained: %s", model_name, reason)
        return Cancelled(message=f"not trained: {reason}")
    ref = DatasetRef(dataset_uri, dataset_sha256)
    ds, augmented = unpack_dataset(dataset_store.fetch(ref, tracker.tracking_uri))
    logger.info("dataset %s verified (sha256 %s)", dataset_uri, dataset_sha256[:12])
    run = PipelineRun(tracker, parent_run_id, Path(cfg.train.checkpoint_dir), resumed=resumed)
    return train_and_evaluate(cfg, model_name, ds, augmented, run, run_key)
