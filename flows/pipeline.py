"""The fashion-mnist-pipeline flow: download -> load -> augment -> train x4 -> evaluate x4.

One MLflow parent run per flow run, one nested child run per model. The config is resolved
and validated before anything is opened in MLflow, so a bad key or model name costs nothing.

Training runs either inline (in this process, one model after the other: the embedded
default) or as deployments: the prepared dataset goes to the dataset store and each model
becomes a `train-model` flow run on the training work pool, all at once.
"""

from __future__ import annotations

import platform
import time
from typing import Any, Literal

import numpy as np
from prefect import flow, get_run_logger
from prefect.states import State

from conf import Config, ConfigError
from flows.config import resolve_config
from flows.train_model import log_datasets, train_and_log
from stages.download import dataset_digest, verify_cache
from stages.load import Dataset
from stages.models import get_spec
from stages.store import DatasetRef, StoredArrays, publish_dataset, verify_stored
from stages.train import backend_and_device
from tasks import prefect_tasks as pt
from tracking import RequestLimits, Tracker, open_tracker

FLOW_NAME = "fashion-mnist-pipeline"
LOCAL_UI = "http://127.0.0.1:5000"


class TrainingRunsFailed(RuntimeError):
    """One or more training flow runs did not complete; the message names each and why."""


def _run_cached(task: Any, *args: Any, still_valid: Any, **kwargs: Any) -> Any:
    """Run a cached task; say in the logs when the cache served it; refresh a stale entry.

    A cache record can outlive the files it points to (a deleted data folder): then the
    task is run again with refresh_cache, instead of handing a dead path downstream.
    """
    logger = get_run_logger()
    state: State = task(*args, return_state=True, **kwargs)
    result = state.result()
    if state.name == "Cached":
        if still_valid(result):
            logger.info("%s: inputs unchanged, reused the cached result (stage skipped)", task.name)
            return result
        # issue 9: still_valid warns what is missing or corrupt
        logger.warning("%s: cached result is no longer valid; running it again", task.name)
        return task.with_options(refresh_cache=True)(*args, **kwargs)
    return result


def _parent_params(cfg: Config, ds: Dataset) -> dict[str, Any]:
    import keras

    env = backend_and_device()
    return {
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
    }


@flow(name=FLOW_NAME, flow_run_name="{profile}", log_prints=True)
def fashion_mnist_pipeline(
    profile: str = "quick",
    models: list[str] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    train_mode: Literal["inline", "deployments"] | None = None,
    overrides: dict[str, Any] | None = None,
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
    """
    logger = get_run_logger()
    cfg = resolve_config(profile, models, epochs, batch_size, seed, overrides, train_mode)
    logger.info(
        "profile %s: models %s, training %s",
        cfg.profile,
        ", ".join(cfg.train.models),
        cfg.orchestration.mode,
    )

    # issue 9 hook: every cached IDX file is checked against its pinned digest
    paths = _run_cached(pt.download, cfg.data, still_valid=verify_cache)
    ds = pt.load(paths, cfg.data, cfg.seed)

    tracker = open_tracker(
        cfg.tracking.tracking_uri,
        cfg.tracking.experiment,
        cfg.tracking.artifact_location,
        limits=RequestLimits.of(cfg.tracking),  # issue 9 hook: bounded tracking calls
    )
    parent = tracker.start_run(
        f"pipeline-{cfg.profile}",
        tags={"profile": cfg.profile, "dataset_digest": ds.digest, "flow": FLOW_NAME},
    )
    logger.info("MLflow parent run %s in %s", parent, tracker.tracking_uri)
    try:
        summary = _run_models(cfg, ds, tracker, parent)
    except BaseException as exc:
        tracker.end_run(parent, failed=True, reason=f"{type(exc).__name__}: {exc}")
        raise
    return summary


def _run_models(cfg: Config, ds: Dataset, tracker: Tracker, parent: str) -> dict[str, float]:
    tracker.log_params(parent, _parent_params(cfg, ds))
    tracker.log_dict(parent, cfg.model_dump(), "config.yaml")
    log_datasets(tracker, parent, cfg, ds, ds.x_train, ds.y_train, "fashion-mnist-train", ds.digest)

    ref: StoredArrays | None = None
    if any(get_spec(m).augmented for m in cfg.train.models):
        ref = _run_cached(
            pt.augment,
            ds,
            cfg.augment,
            cfg.seed,
            cfg.data.prepared_dir,
            still_valid=verify_stored,  # issue 9 hook: digest-checked, not just present
        )
        pt.augmentation_figure(ds, cfg.augment, cfg.seed, tracker, parent)

    if cfg.orchestration.mode == "deployments":
        children, summary, failures = _train_on_workers(cfg, ds, ref, tracker, parent)
    else:
        children, summary, failures = _train_inline(cfg, ds, ref, tracker, parent)

    tracker.log_metrics(parent, {f"test_accuracy.{m}": a for m, a in summary.items()})
    tracker.log_dict(
        parent,
        {"test_accuracy": summary, "failures": failures, "child_runs": children},
        "summary.json",
    )
    links = _print_links(tracker, parent, list(children.values()))
    table = pt.compare(tracker, parent, cfg.train.models, links)
    registry = cfg.tracking.registered_model
    # A run with failures does not move the champion: its comparison is incomplete.
    if registry and cfg.tracking.log_models and len(table) and not failures:
        pt.promote(tracker, parent, table, ds, registry)
    if failures:
        raise TrainingRunsFailed(
            f"{len(failures)} of {len(cfg.train.models)} models failed: "
            + "; ".join(f"{m}: {why}" for m, why in failures.items())
        )
    tracker.end_run(parent)
    return summary


Outcome = tuple[dict[str, str], dict[str, float], dict[str, str]]
"""(model -> child run id, model -> test accuracy, model -> failure reason)."""


def _train_inline(
    cfg: Config, ds: Dataset, ref: StoredArrays | None, tracker: Tracker, parent: str
) -> Outcome:
    logger = get_run_logger()
    augmented = pt.read_augmented(ref) if ref else None
    children: dict[str, str] = {}
    summary: dict[str, float] = {}
    failures: dict[str, str] = {}
    for name in cfg.train.models:
        try:
            children[name], summary[name] = train_and_log(
                cfg, name, ds, augmented, ref.sha256 if ref else None, tracker, parent
            )
        except Exception as exc:
            # One model failing must not throw away the others: its run already says why;
            # go on, and fail the flow at the end.
            failures[name] = f"{type(exc).__name__}: {exc}"
            logger.error("%s failed: %s", name, failures[name])
    return children, summary, failures


def _train_on_workers(
    cfg: Config, ds: Dataset, ref: StoredArrays | None, tracker: Tracker, parent: str
) -> Outcome:
    from flows.dispatch import run_all

    logger = get_run_logger()
    arrays: dict[str, np.ndarray] = {
        "x_train": ds.x_train,
        "y_train": ds.y_train,
        "x_test": ds.x_test,
        "y_test": ds.y_test,
        "digest": np.array(ds.digest),
    }
    if ref is not None:
        x_aug, y_aug = pt.read_augmented(ref)
        arrays |= {"x_aug": x_aug, "y_aug": y_aug, "augmented_sha256": np.array(ref.sha256)}
    dataset: DatasetRef = publish_dataset(cfg.data.store_uri, **arrays)
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
    results = tracker.child_results(parent)
    children = {m: run_id for m, (run_id, _) in results.items()}
    summary: dict[str, float] = {}
    for name in cfg.train.models:  # in the configured order, like the inline path
        accuracy = results.get(name, (None, None))[1]
        if name in failures:
            continue
        if accuracy is None:
            failures[name] = "the training run completed but logged no test_accuracy"
        else:
            summary[name] = accuracy
    return children, summary, failures


def _print_links(tracker: Tracker, parent: str, children: list[str]) -> str:
    """Log where to look in the MLflow UI; return the same links as Markdown."""
    logger = get_run_logger()
    remote = tracker.tracking_uri.startswith(("http://", "https://"))
    ui = tracker.tracking_uri if remote else LOCAL_UI
    links = {
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
    for label, url in links.items():
        logger.info("%-8s %s", f"{label}:", url)
    markdown += [
        f"- [parent run {parent}]({links['parent']})",
        f"- [the four models compared]({links['compare']})",
        f"- [all runs of the experiment]({links['runs']})",
    ]
    return "\n".join(markdown) + "\n"


__all__ = [
    "FLOW_NAME",
    "ConfigError",
    "TrainingRunsFailed",
    "fashion_mnist_pipeline",
    "resolve_config",
]
