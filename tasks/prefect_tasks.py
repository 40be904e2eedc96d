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
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from conf import AugmentConfig, DataConfig, TrainConfig
from stages import plots
from stages.augment import AugmentParams, augment_dataset, variants_of
from stages.champion import best_model, promotion
from stages.compare import (
    ModelResult,
    accuracy_bars,
    comparison_table,
    to_markdown,
    val_accuracy_overlay,
)
from stages.download import FILES, FetchOptions, dataset_digest, fetch_all, rich_progress
from stages.evaluate import EvalResult, evaluate_model
from stages.load import CLASS_NAMES, Dataset, load_dataset
from stages.models import build_model, get_spec
from stages.store import StoredArrays, load_arrays, save_arrays
from stages.train import FitParams, TrainResult, build_for_training, train_model
from tracking import Tracker

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
    params = fit_params(cfg)
    # Seeded (the initial weights depend on it) and built under the precision policy.
    model = build_for_training(lambda: build_model(model_name), params, seed)
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
    # A progress bar on the flow run's Artifacts tab, moved after each epoch.
    progress_id = create_progress_artifact(
        0.0, key=f"training-{_key(model_name)}", description=f"{model_name}: epochs done (%)"
    )

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        tracker.log_metrics(run_id, metrics, step=epoch)
        update_progress_artifact(progress_id, 100.0 * epoch / cfg.epochs)

    result = train_model(
        model,
        x,
        y,
        params,
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


def _key(name: str) -> str:
    # Prefect artifact keys: lowercase letters, digits and dashes only.
    return "".join(c if c.isalnum() else "-" for c in name.lower())


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
        tracker.set_tags(run_id, {"model_uri": uri})  # what the champion step registers
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


# -- compare and promote ------------------------------------------------------------------


def _results_from_runs(tracker: Tracker, parent_run_id: str, models: list[str]) -> list:
    runs = tracker.child_runs(parent_run_id)
    results = []
    for name in models:
        run = runs.get(name)
        if run is None or "test_accuracy" not in run.data.metrics:
            continue  # failed: nothing to compare
        p, m = run.data.params, run.data.metrics
        results.append(
            ModelResult(
                model=name,
                params=int(p["param_count"]),
                train_samples=int(p["train_samples"]),
                epochs=int(p["train.epochs"]),
                test_accuracy=m["test_accuracy"],
                chapter_accuracy=get_spec(name).book_test_accuracy,
                training_seconds=m.get("training_seconds", float("nan")),
                samples_per_second=m.get("samples_per_second", float("nan")),
                val_accuracy=tracker.metric_history(run.info.run_id, "val_accuracy"),
            )
        )
    return results


@task(name="compare", cache_policy=NO_CACHE)
def compare(tracker: Tracker, parent_run_id: str, models: list[str], links: str) -> pd.DataFrame:
    """Gather the children from MLflow; log the table and figures on the parent run and
    publish the table (and the MLflow links) as Prefect artifacts."""
    results = _results_from_runs(tracker, parent_run_id, models)
    table = comparison_table(results)
    tracker.log_text(parent_run_id, table.to_csv(index=False), "comparison/comparison.csv")
    markdown = to_markdown(table)
    tracker.log_text(parent_run_id, markdown, "comparison/comparison.md")
    if len(table):
        tracker.log_figure(
            parent_run_id, accuracy_bars(table), "comparison/test_accuracy_vs_chapter.png"
        )
        tracker.log_figure(
            parent_run_id, val_accuracy_overlay(results), "comparison/val_accuracy.png"
        )
    create_table_artifact(
        key="model-comparison",
        table=[{c: _plain(v) for c, v in row.items()} for row in table.to_dict("records")],
        description="The four models against the chapter (test set accuracy).",
    )
    create_markdown_artifact(
        key="mlflow-run",
        markdown=f"## Comparison\n\n{markdown}\n## MLflow\n\n{links}",
        description="Where this run's models are tracked.",
    )
    return table


def _plain(value: Any) -> Any:
    # numpy scalars do not serialise into Prefect's artifact JSON; 0.4860000014305115 reads
    # worse than 0.486 in the dashboard's table.
    value = value.item() if hasattr(value, "item") else value
    return round(value, 4) if isinstance(value, float) else value


@task(name="promote-champion", cache_policy=NO_CACHE)
def promote(
    tracker: Tracker, parent_run_id: str, table: pd.DataFrame, dataset: Dataset, registry: str
) -> dict[str, Any]:
    """Register the run's best model; it becomes `champion` only if it beats the current
    champion re-evaluated on this run's test set, else `challenger`."""
    logger = get_run_logger()
    best = best_model(table)
    child = tracker.child_runs(parent_run_id)[best]
    model_uri = child.data.tags.get("model_uri")
    if model_uri is None:
        logger.warning(
            "%s was not logged as a model (tracking.log_models): nothing registered", best
        )
        return {}
    candidate = float(table.loc[table["model"] == best, "test_accuracy"].iloc[0])
    current = tracker.alias_version(registry, "champion")
    champion_accuracy = None
    if current is not None:
        # Scored again here, on this run's test set: numbers from another test set (a smoke
        # subset, say) would not be comparable.
        model = tracker.load_keras_model(f"models:/{registry}@champion")
        champion_accuracy = evaluate_model(
            model, dataset.x_test, dataset.y_test, CLASS_NAMES
        ).accuracy
    alias = promotion(candidate, champion_accuracy)
    version = tracker.register(model_uri, registry)
    tracker.set_alias(registry, alias, version)
    decision = {
        "champion.model": best,
        "champion.registered_version": version,
        "champion.alias": alias,
        "champion.previous_version": current.version if current is not None else "none",
    }
    tracker.set_tags(parent_run_id, decision)
    tracker.log_metrics(
        parent_run_id,
        {"champion.candidate_test_accuracy": candidate}
        | (
            {"champion.current_test_accuracy": champion_accuracy}
            if champion_accuracy is not None
            else {}
        ),
    )
    shown = "none" if champion_accuracy is None else f"{champion_accuracy:.4f}"
    logger.info(
        "%s (test accuracy %.4f; current champion on the same test set: %s) registered as "
        "%s version %s with alias %s",
        best,
        candidate,
        shown,
        registry,
        version,
        alias,
    )
    return decision
