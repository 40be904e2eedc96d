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
from typing import Any

from prefect import flow, get_run_logger

from fmnist.conf import DEFAULT_PROFILE, Config, ConfigError, load_config
from fmnist.conf.schema import TrainMode
from fmnist.flows import PIPELINE_ENTRYPOINT, PIPELINE_FLOW
from fmnist.flows.train_model import train_and_evaluate
from fmnist.stages.augment import Augmented
from fmnist.stages.backend import apply_backend, resolve_backend
from fmnist.stages.download import dataset_digest, verify_cache
from fmnist.stages.load import Dataset
from fmnist.stages.models import REGISTRY, get_spec
from fmnist.stages.store import StoredArrays, pack_dataset, verify_stored
from fmnist.stages.train import backend_and_device
from fmnist.tasks import dataset as dataset_store
from fmnist.tasks import keys, run_cached
from fmnist.tasks.augment import augment, augmentation_figure, read_augmented
from fmnist.tasks.compare import compare
from fmnist.tasks.download import download
from fmnist.tasks.load import TRAIN_SET, load, log_datasets
from fmnist.tasks.promote import promote
from fmnist.tasks.resume import PipelineRun, pipeline_run
from fmnist.tasks.train import TrainingOutcome
from fmnist.tracking import Tracker, tracker_for
from fmnist.tracking.provenance import provenance_tags
from fmnist.tracking.runs import stopped_by

LOCAL_UI = "http://127.0.0.1:5000"
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


class NoUsableModel(RuntimeError):
    """No model is usable (all diverged or scored below the floor; not beating the champion
    is no failure); the message and the parent's promotion.* tags say why."""


@flow(name=PIPELINE_FLOW, flow_run_name="{profile}", log_prints=True)
def fashion_mnist_pipeline(
    profile: str = DEFAULT_PROFILE,
    models: list[str] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    train_mode: TrainMode | None = None,
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
        fresh: Start over even if an unfinished run with the same config and data could go
            on from its checkpoints (that run is then abandoned for good).
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

    until = time.time() + cfg.data.download_deadline_s  # every file, mirror and retry
    files = run_cached(download, cfg.data, until, still_valid=verify_cache)  # pinned digests
    dataset = load(files, cfg.data, cfg.seed)
    tracker = tracker_for(cfg.tracking)  # bounded calls, a spool for outages
    provenance = provenance_tags(PIPELINE_ENTRYPOINT, cfg.model_dump(), dataset.digest)
    tags = {**provenance, keys.PROFILE: cfg.profile, keys.FLOW: PIPELINE_FLOW}
    with pipeline_run(  # new, or an unfinished one with this config and data, resumed
        tracker,
        f"pipeline-{cfg.profile}",
        tags,
        cfg.train.checkpoint_dir,
        flow=PIPELINE_FLOW,
        fresh=fresh,
    ) as run:
        get_run_logger().info("MLflow parent run %s in %s", run.id, tracker.tracking_uri)
        log_run_inputs(cfg, dataset, tracker, run.id)
        augmented = augment_if_needed(cfg, dataset, tracker, run.id)
        outcomes = train_and_evaluate_all(cfg, dataset, augmented, run)
        log_summary(outcomes, tracker, run.id)
        children = tracker.child_runs(run.id)  # the models' runs, read back once
        ui = links(tracker, run.id, outcomes)
        compare(tracker, run.id, children, cfg.train.models, ui, cfg.tracking.significance_level)
        promoted = promote(  # the gate judges every run; registers where a registry is set
            tracker,
            run.id,
            children,
            dataset,
            cfg.tracking,
            failures=failures_of(outcomes),
            provenance=provenance,
        )
        check_trained(outcomes)
        if not promoted.usable:  # a run that produced nothing usable is not a success
            raise NoUsableModel(promoted.decision.reason)
    return {m: o.test_accuracy for m, o in outcomes.items() if o.ok}


# -- the steps the flow body names ---------------------------------------------------------


def log_run_inputs(cfg: Config, ds: Dataset, tracker: Tracker, parent: str) -> None:
    """The parent run's params, resolved config and dataset inputs."""
    import keras

    env = backend_and_device()
    tracker.log.params(
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
    tracker.log.dict(parent, cfg.model_dump(), "config.yaml")
    train = (ds.x_train, ds.y_train, TRAIN_SET, ds.digest)
    log_datasets(tracker, parent, ds, train, cfg.data.cache_dir)


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


def train_and_evaluate_all(
    cfg: Config, ds: Dataset, augmented: StoredArrays | None, run: PipelineRun
) -> dict[str, TrainingOutcome]:
    """Train and evaluate every configured model, inline or on the training work pool."""
    if cfg.orchestration.mode == "deployments":
        return _train_on_workers(cfg, ds, augmented, run)
    return _train_inline(cfg, ds, augmented, run)


def _train_inline(
    cfg: Config, ds: Dataset, ref: StoredArrays | None, run: PipelineRun
) -> dict[str, TrainingOutcome]:
    logger = get_run_logger()
    augmented = Augmented(*read_augmented(ref), ref.sha256) if ref else None
    outcomes: dict[str, TrainingOutcome] = {}
    for name in cfg.train.models:
        try:
            outcomes[name] = train_and_evaluate(cfg, name, ds, augmented, run)
        except Exception as exc:
            if stopped_by(exc) is not None:  # a cleanup failed while a SIGTERM unwound it
                raise
            # One model failing must not throw away the others: its run already says why;
            # go on, and fail the flow at the end.
            outcomes[name] = TrainingOutcome(name, failure=f"{type(exc).__name__}: {exc}")
            logger.error("%s failed: %s", name, outcomes[name].failure)
    return outcomes


def _train_on_workers(
    cfg: Config, ds: Dataset, ref: StoredArrays | None, run: PipelineRun
) -> dict[str, TrainingOutcome]:
    from fmnist.flows.dispatch import run_all

    logger = get_run_logger()
    augmented = Augmented(*read_augmented(ref), ref.sha256) if ref else None
    arrays = pack_dataset(ds, augmented)
    dataset = dataset_store.publish(cfg.data.store_uri, arrays, run.tracker, run.id)
    logger.info("dataset published to %s (sha256 %s)", dataset.uri, dataset.sha256[:12])
    # Children log to the store this run logs to (an environment variable on a worker
    # may still point them at the same server by another address).
    config = cfg.model_dump()
    config["tracking"]["tracking_uri"] = run.tracker.tracking_uri
    requests = {
        name: {
            "model_name": name,
            "dataset_uri": dataset.uri,
            "dataset_sha256": dataset.sha256,
            "parent_run_id": run.id,
            "config": config,
            "resumed": run.resumed,
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
    logged = run.tracker.child_runs(run.id)
    outcomes: dict[str, TrainingOutcome] = {}
    for name in cfg.train.models:  # in the configured order, like the inline path
        child = logged.get(name)
        accuracy = child.data.metrics.get(keys.TEST_ACCURACY) if child else None
        failure = failures.get(name)
        if failure is None and accuracy is None:
            failure = f"the training run completed but logged no {keys.TEST_ACCURACY}"
        outcomes[name] = TrainingOutcome(
            name, child.info.run_id if child else None, accuracy, failure
        )
    return outcomes


def failures_of(outcomes: dict[str, TrainingOutcome]) -> dict[str, str | None]:
    """Each model that did not train and score, and why."""
    return {m: o.failure for m, o in outcomes.items() if not o.ok}


def check_trained(outcomes: dict[str, TrainingOutcome]) -> None:
    """Raise TrainingRunsFailed, naming each model that failed and why, if any did."""
    failures = failures_of(outcomes)
    if failures:
        raise TrainingRunsFailed(
            f"{len(failures)} of {len(outcomes)} models failed: "
            + "; ".join(f"{m}: {why}" for m, why in failures.items())
        )


def log_summary(outcomes: dict[str, TrainingOutcome], tracker: Tracker, parent: str) -> None:
    """Each model's test accuracy on the parent, and summary.json."""
    accuracies = {m: o.test_accuracy for m, o in outcomes.items() if o.ok}
    tracker.log.metrics(parent, {f"{keys.TEST_ACCURACY}.{m}": a for m, a in accuracies.items()})
    tracker.log.dict(
        parent,
        {
            keys.TEST_ACCURACY: accuracies,
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
        "runs": tracker.links(ui).experiment(),
        "parent": tracker.links(ui).run(parent),
        "compare": tracker.links(ui).compare(children),
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


__all__ = ["ConfigError", "NoUsableModel", "TrainingRunsFailed", "fashion_mnist_pipeline"]
