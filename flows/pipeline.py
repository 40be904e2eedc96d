"""The fashion-mnist-pipeline flow: download -> load -> augment -> train x4 -> evaluate x4.

One MLflow parent run per flow run, one nested child run per model. The config is resolved
and validated before anything is opened in MLflow, so a bad key or model name costs nothing.
"""

from __future__ import annotations

import hashlib
import os
import platform
import time
from typing import Any

import numpy as np
from prefect import flow, get_run_logger
from prefect.states import State

from conf import Config, ConfigError, load_config
from tasks import prefect_tasks as pt
from tasks.data import Dataset
from tasks.data.download import dataset_digest
from tasks.models import REGISTRY, get_spec
from tasks.tracking import Tracker, open_tracker
from tasks.training import backend_and_device

FLOW_NAME = "fashion-mnist-pipeline"
LOCAL_UI = "http://127.0.0.1:5000"


def resolve_config(
    profile: str = "quick",
    models: list[str] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
) -> Config:
    """Profile + overrides + the flow's explicit parameters, validated (ConfigError if not)."""
    merged: dict[str, Any] = {}
    if isinstance(overrides, list):
        from conf import parse_overrides

        merged |= parse_overrides(overrides)
    elif overrides:
        merged |= dict(overrides)
    explicit = {
        "train.models": models,
        "train.epochs": epochs,
        "train.batch_size": batch_size,
        "seed": seed,
    }
    merged |= {k: v for k, v in explicit.items() if v is not None}
    return load_config(profile, merged, known_models=list(REGISTRY))


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
        logger.warning("%s: cached result points to missing files; running it again", task.name)
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
    overrides: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Reproduce the chapter's four CNNs; return model name -> test accuracy.

    Args:
        profile: conf/ profile: book (the chapter exactly), quick (default, ~10 min on a
            2-core CPU) or smoke (seconds), or a path to a YAML file.
        models: Subset of conv_only, pool_dropout, vgg, vgg_augmented (default: the profile's).
        epochs: Epochs per model (default: the profile's).
        batch_size: Training batch size (default: the profile's).
        seed: Seed for subsets, augmentation and weight initialisation.
        overrides: Any other setting, as dotted keys, e.g. {"data.train_subset": 2000}.
    """
    logger = get_run_logger()
    cfg = resolve_config(profile, models, epochs, batch_size, seed, overrides)
    logger.info("profile %s: models %s", cfg.profile, ", ".join(cfg.train.models))

    paths = _run_cached(
        pt.download, cfg.data, still_valid=lambda p: all(os.path.isfile(v) for v in p.values())
    )
    ds = pt.load(paths, cfg.data, cfg.seed)

    tracker = open_tracker(
        cfg.tracking.tracking_uri, cfg.tracking.experiment, cfg.tracking.artifact_location
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
    logger = get_run_logger()
    tracker.log_params(parent, _parent_params(cfg, ds))
    tracker.log_dict(parent, cfg.model_dump(), "config.yaml")
    _log_datasets(
        tracker, parent, cfg, ds, ds.x_train, ds.y_train, "fashion-mnist-train", ds.digest
    )

    augmented = ref = None
    if any(get_spec(m).augmented for m in cfg.train.models):
        ref = _run_cached(
            pt.augment,
            ds,
            cfg.augment,
            cfg.seed,
            cfg.data.prepared_dir,
            still_valid=lambda r: r.exists(),
        )
        augmented = pt.read_augmented(ref)
        pt.augmentation_figure(ds, cfg.augment, cfg.seed, tracker, parent)

    summary: dict[str, float] = {}
    failures: dict[str, str] = {}
    children: dict[str, str] = {}
    for name in cfg.train.models:
        spec = get_spec(name)
        x, y = ds.x_train, ds.y_train
        if spec.augmented:
            # Originals first, then augmented, as the chapter concatenated them; Keras'
            # validation_split then takes the last quarter (mostly augmented images).
            x = np.concatenate([ds.x_train, augmented[0]])
            y = np.concatenate([ds.y_train, augmented[1]])
        env = backend_and_device()
        child = tracker.start_run(
            name,
            parent_run_id=parent,
            tags={
                "model": name,
                "profile": cfg.profile,
                "book_test_accuracy": spec.book_test_accuracy,
                "book_params": spec.book_params,
            },
        )
        children[name] = child
        tracker.log_params(
            child,
            {
                # The whole config on every child too: the compare view then has the same
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
        train_digest = _combined_digest(ds.digest, ref.sha256) if spec.augmented else ds.digest
        _log_datasets(tracker, child, cfg, ds, x, y, train_name, train_digest)
        started = time.perf_counter()
        try:
            trained = pt.train(name, x, y, cfg.train, cfg.seed, tracker, child)
            result = pt.evaluate(
                name, trained.model, ds, cfg.train, tracker, child, cfg.tracking.log_models
            )
        except Exception as exc:
            # One model failing must not throw away the others: record why, go on, and
            # fail the flow at the end.
            failures[name] = f"{type(exc).__name__}: {exc}"
            logger.error("%s failed: %s", name, failures[name])
            tracker.end_run(child, failed=True, reason=failures[name])
            continue
        except BaseException as exc:
            tracker.end_run(child, failed=True, reason=f"{type(exc).__name__}: {exc}")
            raise
        tracker.end_run(child)
        summary[name] = result.accuracy
        logger.info("%s done in %.0f s", name, time.perf_counter() - started)

    tracker.log_metrics(parent, {f"test_accuracy.{m}": a for m, a in summary.items()})
    tracker.log_dict(
        parent,
        {"test_accuracy": summary, "failures": failures, "child_runs": children},
        "summary.json",
    )
    _print_links(tracker, parent, list(children.values()))
    if failures:
        raise RuntimeError(
            f"{len(failures)} of {len(cfg.train.models)} models failed: "
            + "; ".join(f"{m}: {why}" for m, why in failures.items())
        )
    tracker.end_run(parent)
    return summary


def _log_datasets(
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


def _combined_digest(base: str, augmented_sha256: str) -> str:
    return hashlib.sha256(f"{base}+{augmented_sha256}".encode()).hexdigest()


def _print_links(tracker: Tracker, parent: str, children: list[str]) -> None:
    logger = get_run_logger()
    remote = tracker.tracking_uri.startswith(("http://", "https://"))
    ui = tracker.tracking_uri if remote else LOCAL_UI
    if not remote:
        logger.info(
            "open the MLflow UI with: mlflow ui --backend-store-uri %s", tracker.tracking_uri
        )
    logger.info("runs:    %s", tracker.experiment_url(ui))
    logger.info("parent:  %s", tracker.run_url(ui, parent))
    logger.info("compare: %s", tracker.compare_url(ui, children))


__all__ = ["FLOW_NAME", "ConfigError", "fashion_mnist_pipeline", "resolve_config"]
