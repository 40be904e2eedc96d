"""Prefect task wrappers: thin shells over the stage logic (retries, caching, logging).

The stage logic in tasks/{data,augment,models,training} knows nothing of Prefect or MLflow;
this module wires it to Prefect's logger and to the tracking module.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from conf import AugmentConfig, DataConfig, TrainConfig
from tasks import plots
from tasks.augment import AugmentParams, augment_dataset, variants_of
from tasks.data import CLASS_NAMES, Dataset, fetch_all, load_dataset
from tasks.data.download import FILES, FetchOptions, dataset_digest, rich_progress
from tasks.data.store import StoredArrays, load_arrays, save_arrays
from tasks.models import build_model, get_spec
from tasks.tracking import Tracker
from tasks.training import (
    EvalResult,
    FitParams,
    TrainResult,
    evaluate_model,
    seed_everything,
    train_model,
)

CACHE_EXPIRATION = timedelta(days=30)


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# -- download -----------------------------------------------------------------------------


def _download_key(_: TaskRunContext, params: dict[str, Any]) -> str:
    # The content is pinned by digest, so the key is the pinned digests plus where the
    # verified copies live: changing the mirrors cannot change what the task returns.
    cfg: DataConfig = params["cfg"]
    return "download-" + _digest(dataset_digest(), str(Path(cfg.cache_dir).resolve()))


@task(
    name="download",
    retries=2,
    retry_delay_seconds=[5, 30],
    cache_key_fn=_download_key,
    cache_expiration=CACHE_EXPIRATION,
    persist_result=True,
)
def download(cfg: DataConfig) -> dict[str, str]:
    """Fetch and verify the four IDX files into the cache folder."""
    logger = get_run_logger()
    logger.info("fetching %d files; sources in order: %s", len(FILES), ", ".join(cfg.sources))
    opts = FetchOptions(
        timeout=cfg.http_timeout_s,
        retries=cfg.http_retries,
        backoff=cfg.http_backoff_s,
        progress=rich_progress(logger.info),
    )
    paths = fetch_all(
        cfg.sources,
        Path(cfg.cache_dir),
        opts,
        on_file=lambda name, origin: logger.info("%s: sha256 verified (from %s)", name, origin),
    )
    return {name: str(path) for name, path in paths.items()}


# -- load ---------------------------------------------------------------------------------


# NO_CACHE on tasks that take arrays or models: Prefect's default policy would hash them.
@task(name="load-and-normalize", cache_policy=NO_CACHE)
def load(paths: dict[str, str], cfg: DataConfig, seed: int) -> Dataset:
    """Parse, subset, reshape to (N, 28, 28, 1) and scale to [0, 1]."""
    logger = get_run_logger()
    ds = load_dataset(
        {k: Path(v) for k, v in paths.items()},
        train_subset=cfg.train_subset,
        test_subset=cfg.test_subset,
        seed=seed,
    )
    logger.info(
        "loaded %d training and %d test images %s, digest %s",
        len(ds.y_train),
        len(ds.y_test),
        ds.x_train.shape[1:],
        ds.digest[:12],
    )
    return ds


# -- augment ------------------------------------------------------------------------------


def augment_params(cfg: AugmentConfig) -> AugmentParams:
    """The augmentation recipe part of the config, as the plain logic's dataclass."""
    fields = AugmentParams.__dataclass_fields__
    return AugmentParams(**{k: v for k, v in cfg.model_dump().items() if k in fields})


def _augment_key(_: TaskRunContext, params: dict[str, Any]) -> str:
    # Content, not identity: the digest of the images being augmented, the recipe and the seed.
    ds: Dataset = params["dataset"]
    cfg: AugmentConfig = params["cfg"]
    return "augment-" + _digest(ds.digest, cfg.model_dump(), params["seed"], params["out_dir"])


@task(
    name="augment",
    cache_key_fn=_augment_key,
    cache_expiration=CACHE_EXPIRATION,
    persist_result=True,
)
def augment(dataset: Dataset, cfg: AugmentConfig, seed: int, out_dir: str) -> StoredArrays:
    """Draw cfg.n_augmented images with replacement, augment them, store them by content."""
    logger = get_run_logger()
    logger.info("augmenting %d images drawn from %d", cfg.n_augmented, len(dataset.y_train))
    x_aug, y_aug = augment_dataset(
        dataset.x_train,
        dataset.y_train,
        cfg.n_augmented,
        augment_params(cfg),
        seed=seed,
        batch_size=cfg.batch_size,
    )
    key = _digest(dataset.digest, cfg.model_dump(), seed)[:16]
    ref = save_arrays(Path(out_dir) / f"augmented-{key}.npz", x=x_aug, y=y_aug)
    logger.info("stored %d augmented images at %s", len(y_aug), ref.path)
    return ref


@task(name="augmentation-figure", cache_policy=NO_CACHE)
def augmentation_figure(
    dataset: Dataset, cfg: AugmentConfig, seed: int, tracker: Tracker, run_id: str
) -> None:
    """Log the chapter's figure: 100 augmented variants of the first training image."""
    images = variants_of(dataset.x_train[0], 100, augment_params(cfg), seed=seed)
    fig = plots.image_grid(
        images, f"100 augmented variants of training image 0 ({CLASS_NAMES[dataset.y_train[0]]})"
    )
    tracker.log_figure(run_id, fig, "augmentation/first_image_variants.png")


def read_augmented(ref: StoredArrays) -> tuple[np.ndarray, np.ndarray]:
    """Load stored augmented images (digest-checked)."""
    arrays = load_arrays(ref)
    return arrays["x"], arrays["y"]


# -- train and evaluate -------------------------------------------------------------------


def fit_params(cfg: TrainConfig) -> FitParams:
    """The fitting part of the train config, as the plain logic's dataclass."""
    fields = FitParams.__dataclass_fields__
    return FitParams(**{k: v for k, v in cfg.model_dump().items() if k in fields})


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
        f"{spec.book_params:,}",
        len(y),
        cfg.epochs,
        cfg.batch_size,
    )
    result = train_model(
        model,
        x,
        y,
        fit_params(cfg),
        on_epoch=lambda epoch, metrics: tracker.log_metrics(run_id, metrics, step=epoch),
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
    metrics = {"test_loss": result.loss, "test_accuracy": result.accuracy}
    metrics |= {
        f"test_f1.{_slug(n)}": float(f) for n, f in zip(CLASS_NAMES, result.f1, strict=True)
    }
    tracker.log_metrics(run_id, metrics)
    tracker.log_text(run_id, result.report(), "classification_report.txt")
    tracker.log_dict(
        run_id,
        {"class_names": list(CLASS_NAMES), "matrix": result.confusion.tolist()},
        "confusion_matrix.json",
    )
    tracker.log_figure(
        run_id,
        plots.confusion_heatmap(
            result.confusion,
            CLASS_NAMES,
            f"{model_name}: test accuracy {result.accuracy:.4f} on {len(dataset.y_test)} images",
        ),
        "confusion_matrix.png",
    )
    if log_model:
        uri = tracker.log_keras_model(run_id, model, dataset.x_test[:8])
        logger.info("%s: model logged as %s", model_name, uri)
    book = get_spec(model_name).book_test_accuracy
    logger.info(
        "%s: test accuracy %.4f (chapter %.4f, %+.4f), test loss %.4f",
        model_name,
        result.accuracy,
        book,
        result.accuracy - book,
        result.loss,
    )
    return result
