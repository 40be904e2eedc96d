"""The fashion-mnist-pipeline flow: download -> load -> augment -> train x4 (each evaluated)
-> compare -> promote. The flow body below is that list, top to bottom.

One MLflow parent run per flow run, one nested child run per model. The config is resolved
and validated before anything is opened in MLflow, so a bad key or model name costs nothing.

Training runs either inline (in this process, one model after the other: the embedded
default) or as deployments: the prepared dataset goes to the dataset store and each model
becomes a `train-model` flow run on the training work pool. Either way each model comes back
as a TrainingOutcome.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fmnist.conf import Config, ConfigError, load_config
from fmnist.flows.train_model import Augmented, TrainingOutcome, log_datasets, train_one
from fmnist.stages.backend import apply_backend, resolve_backend
from fmnist.stages.download import dataset_digest, verify_cache
from fmnist.stages.load import Dataset
from fmnist.stages.models import REGISTRY, get_spec
from fmnist.stages.store import StoredArrays, publish_dataset, verify_stored
from fmnist.stages.train import backend_and_device
from fmnist.tasks.augment import augment, augmentation_figure, read_augmented
from fmnist.tasks.compare import compare
from fmnist.tasks.download import download
from fmnist.tasks.load import load
from fmnist.tasks.promote import promote
from fmnist.tasks.reclaim import reclaim
from fmnist.tracking import Tracker, tracker_for
from fmnist.tracking.ownership import own
from fmnist.tracking.provenance import CONFIG_DIGEST, FLOW_RUN_ID, provenance_tags
from prefect import flow, get_run_logger
from prefect.states import State

FLOW_NAME = "fashion-mnist-pipeline"
ENTRYPOINT = "flows/pipeline.py:fashion_mnist_pipeline"
LOCAL_UI = "http://127.0.0.1:5000"
EARLIER_FLOW_RUNS = "prefect.earlier_flow_run_ids"
# The flow's own parameters, as the config keys they set (the rest go through `overrides`).
PARAMETER_KEYS = {
    "models": "train.models",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "seed": "seed",
    "train_mode": "orchestration.mode",
}


class TrainingRunsFailed(RuntimeError):
    """One or more models did not train; the message names each and why."""


@flow(name=FLOW_NAME, flow_run_name="{profile}", log_prints=True)
def fashion_mnist_pipeline(
    profile: str = "quick",
    models: list[str] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    train_mode: Literal["inline", "deployments"] | None = None,
    overrides: dict[str, Any] | None = None,
    fresh: bool = False,
) -> dict[str, float]:
    """Reproduce the chapter's four CNNs; return model name -> test accuracy.

    Args:
        profile: conf/ profile: book (the chapter exactly), quick (default, minutes on a
            2-core CPU) or smoke (seconds), or a path to a YAML file.
        models: Subset of conv_only, pool_dropout, vgg, vgg_augmented (default: the profile's).
        epochs: Epochs per model (default: the profile's).
        batch_size: Training batch size (default: the profile's).
        seed: Seed for subsets, augmentation and weight initialisation.
        train_mode: inline (train here, one model after another) or deployments (one
            train-model flow run per model on the training work pool, in parallel).
        overrides: Any other setting, as dotted keys, e.g. {"data.train_subset": 2000}.
        fresh: Start over even if a killed run with the same config and data could be
            resumed from its checkpoints.
    """
    explicit = dict(models=models, epochs=epochs, batch_size=batch_size, seed=seed)
    explicit["train_mode"] = train_mode
    cfg = load_config(
        profile,
        {
            **(overrides or {}),
            **{PARAMETER_KEYS[k]: v for k, v in explicit.items() if v is not None},
        },
        known_models=REGISTRY,
    )
    # Before anything here imports keras; from the CLI this only confirms its choice.
    apply_backend(resolve_backend(cfg.keras_backend))
    get_run_logger().info(
        "profile %s: models %s, training %s",
        cfg.profile,
        ", ".join(cfg.train.models),
        cfg.orchestration.mode,
    )

    files = run_cached(download, cfg.data, still_valid=verify_cache)  # pinned digests
    dataset = load(files, cfg.data, cfg.seed)
    tracker = tracker_for(cfg.tracking)  # bounded calls, a spool for outages
    provenance = provenance_tags(ENTRYPOINT, cfg.model_dump(), dataset.digest)
    resume = reclaim(
        tracker, cfg.train.checkpoint_dir, provenance[CONFIG_DIGEST], dataset.digest, fresh
    )
    run_tags = {**provenance, "profile": cfg.profile, "flow": FLOW_NAME}
    if resume:
        run_tags |= earlier_flow_runs(tracker, resume)
    with (
        tracker.run(f"pipeline-{cfg.profile}", tags=run_tags, resume=resume) as parent,
        own(Path(cfg.train.checkpoint_dir) / parent),
    ):
        get_run_logger().info("MLflow parent run %s in %s", parent, tracker.tracking_uri)
        log_run_inputs(cfg, dataset, tracker, parent)
        augmented = augment_if_needed(cfg, dataset, tracker, parent)
        outcomes = train_models(cfg, dataset, augmented, tracker, parent)  # each evaluated
        log_summary(outcomes, tracker, parent)
        compare(tracker, parent, cfg.train.models, links(tracker, parent, outcomes))
        failures = {m: o.failure for m, o in outcomes.items() if not o.ok}
        if cfg.tracking.registered_model and cfg.tracking.log_models:  # the gate decides
            promote(
                tracker,
                parent,
                cfg.train.models,
                dataset,
                cfg.tracking.registered_model,
                cfg.tracking.promotion_floor,
                failures,
                provenance,
            )
        if failures:
            raise TrainingRunsFailed(
                f"{len(failures)} of {len(outcomes)} models failed: "
                + "; ".join(f"{m}: {why}" for m, why in failures.items())
            )
    return {m: o.test_accuracy for m, o in outcomes.items() if o.ok}


# -- the steps the flow body names ---------------------------------------------------------


def run_cached(task: Any, *args: Any, still_valid: Callable[[Any], bool], **kwargs: Any) -> Any:
    """Run a cached task; say in the logs when the cache served it; refresh a stale entry.

    A cache record can outlive the files it points to, or their content (a deleted data
    folder, a damaged file): still_valid checks them against their digests, and warns, and
    the task runs again with refresh_cache instead of handing bad data downstream.
    """
    logger = get_run_logger()
    state: State = task(*args, return_state=True, **kwargs)
    result = state.result()
    if state.name == "Cached":
        if still_valid(result):
            logger.info("%s: inputs unchanged, reused the cached result (stage skipped)", task.name)
            return result
        logger.warning("%s: cached result is no longer valid; running it again", task.name)
        return task.with_options(refresh_cache=True)(*args, **kwargs)
    return result


def earlier_flow_runs(tracker: Tracker, run_id: str) -> dict[str, str]:
    """A resumed run keeps the ids of the flow runs that worked on it before this one."""
    tags = tracker.get_run(run_id).data.tags
    ids = [i for i in tags.get(EARLIER_FLOW_RUNS, "").split(",") if i]
    if previous := tags.get(FLOW_RUN_ID):
        ids.append(previous)
    return {EARLIER_FLOW_RUNS: ",".join(ids)}


def log_run_inputs(cfg: Config, ds: Dataset, tracker: Tracker, parent: str) -> None:
    """The parent run's params, resolved config and dataset inputs."""
    import keras

    env = backend_and_device()
    tracker.log_params(
        parent,
        {
            **cfg.flat(),
            "dataset_digest": ds.digest,
            "dataset_source_digest": dataset_digest(),
            "train_images": len(ds.y_train),
            "test_images": len(ds.y_test),
            "keras_backend": env["backend"],
            "keras_version": keras.__version__,
            "device": env["device"],
            "cpu_count": env["cpu_count"],
            "python": platform.python_version(),
        },
    )
    tracker.log_dict(parent, cfg.model_dump(), "config.yaml")
    log_datasets(tracker, parent, cfg, ds, ds.x_train, ds.y_train, "fashion-mnist-train", ds.digest)


def augment_if_needed(
    cfg: Config, ds: Dataset, tracker: Tracker, parent: str
) -> StoredArrays | None:
    """The augmented images (cached by content) if a configured model trains on them."""
    if not any(get_spec(m).augmented for m in cfg.train.models):
        return None
    ref = run_cached(
        augment, ds, cfg.augment, cfg.seed, cfg.data.prepared_dir, still_valid=verify_stored
    )
    augmentation_figure(ds, cfg.augment, cfg.seed, tracker, parent)
    return ref


def train_models(
    cfg: Config, ds: Dataset, augmented: StoredArrays | None, tracker: Tracker, parent: str
) -> dict[str, TrainingOutcome]:
    """Train and evaluate every configured model, inline or on the training work pool."""
    if cfg.orchestration.mode == "deployments":
        return _train_on_workers(cfg, ds, augmented, tracker, parent)
    return _train_inline(cfg, ds, augmented, tracker, parent)


def _train_inline(
    cfg: Config, ds: Dataset, ref: StoredArrays | None, tracker: Tracker, parent: str
) -> dict[str, TrainingOutcome]:
    logger = get_run_logger()
    augmented = Augmented(*read_augmented(ref), ref.sha256) if ref else None
    outcomes: dict[str, TrainingOutcome] = {}
    for name in cfg.train.models:
        try:
            outcomes[name] = train_one(cfg, name, ds, augmented, tracker, parent)
        except Exception as exc:
            # One model failing must not throw away the others: its run already says why;
            # go on, and fail the flow at the end.
            outcomes[name] = TrainingOutcome(name, failure=f"{type(exc).__name__}: {exc}")
            logger.error("%s failed: %s", name, outcomes[name].failure)
    return outcomes


def _train_on_workers(
    cfg: Config, ds: Dataset, ref: StoredArrays | None, tracker: Tracker, parent: str
) -> dict[str, TrainingOutcome]:
    from fmnist.flows.dispatch import run_all

    logger = get_run_logger()
    arrays: dict[str, np.ndarray] = {
        "x_train": ds.x_train,
        "y_train": ds.y_train,
        "x_test": ds.x_test,
        "y_test": ds.y_test,
        "digest": np.array(ds.digest),
    }
    if ref is not None:
        x_aug, y_aug = read_augmented(ref)
        arrays |= {"x_aug": x_aug, "y_aug": y_aug, "augmented_sha256": np.array(ref.sha256)}
    dataset = publish_dataset(cfg.data.store_uri, **arrays)
    logger.info("dataset published to %s (sha256 %s)", dataset.uri, dataset.sha256[:12])
    # Children log to the store this run logs to (an environment variable on a worker
    # may still point them at the same server by another address).
    config = cfg.model_dump()
    config["tracking"]["tracking_uri"] = tracker.tracking_uri
    requests = {
        name: {
            "model_name": name,
            "dataset_uri": dataset.uri,
            "dataset_sha256": dataset.sha256,
            "parent_run_id": parent,
            "config": config,
        }
        for name in cfg.train.models
    }
    started = time.perf_counter()
    failures = run_all(
        cfg.orchestration.train_deployment,
        requests,
        poll_interval=cfg.orchestration.poll_interval_s,
        timeout=cfg.orchestration.timeout_s,
    )
    logger.info("training runs finished in %.0f s", time.perf_counter() - started)
    # The workers logged to the store; what they measured is read back from there.
    logged = tracker.child_results(parent)
    outcomes: dict[str, TrainingOutcome] = {}
    for name in cfg.train.models:  # in the configured order, like the inline path
        run_id, accuracy = logged.get(name, (None, None))
        failure = failures.get(name)
        if failure is None and accuracy is None:
            failure = "the training run completed but logged no test_accuracy"
        outcomes[name] = TrainingOutcome(name, run_id, accuracy, failure)
    return outcomes


def log_summary(outcomes: dict[str, TrainingOutcome], tracker: Tracker, parent: str) -> None:
    """Each model's test accuracy on the parent, and summary.json."""
    accuracies = {m: o.test_accuracy for m, o in outcomes.items() if o.ok}
    tracker.log_metrics(parent, {f"test_accuracy.{m}": a for m, a in accuracies.items()})
    tracker.log_dict(
        parent,
        {
            "test_accuracy": accuracies,
            "failures": {m: o.failure for m, o in outcomes.items() if not o.ok},
            "child_runs": {m: o.run_id for m, o in outcomes.items() if o.run_id},
        },
        "summary.json",
    )


def links(tracker: Tracker, parent: str, outcomes: dict[str, TrainingOutcome]) -> str:
    """Log where to look in the MLflow UI; return the same links as Markdown."""
    logger = get_run_logger()
    children = [o.run_id for o in outcomes.values() if o.run_id]
    remote = tracker.tracking_uri.startswith(("http://", "https://"))
    ui = tracker.tracking_uri if remote else LOCAL_UI
    urls = {
        "runs": tracker.experiment_url(ui),
        "parent": tracker.run_url(ui, parent),
        "compare": tracker.compare_url(ui, children),
    }
    markdown = []
    if not remote:
        logger.info(
            "open the MLflow UI with: mlflow ui --backend-store-uri %s", tracker.tracking_uri
        )
        markdown.append(
            f"Start the UI with `mlflow ui --backend-store-uri {tracker.tracking_uri}`, then:\n"
        )
    for label, url in urls.items():
        logger.info("%-8s %s", f"{label}:", url)
    markdown += [
        f"- [parent run {parent}]({urls['parent']})",
        f"- [the four models compared]({urls['compare']})",
        f"- [all runs of the experiment]({urls['runs']})",
    ]
    return "\n".join(markdown) + "\n"


__all__ = ["FLOW_NAME", "ConfigError", "TrainingRunsFailed", "fashion_mnist_pipeline"]
