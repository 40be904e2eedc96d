"""The augment task: the chapter's augmentation (stages/augment.py), stored by content."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from fmnist.conf import AugmentConfig
from fmnist.stages import plots
from fmnist.stages.augment import AugmentParams, augment_dataset, variants_of
from fmnist.stages.load import CLASS_NAMES, Dataset
from fmnist.stages.store import StoredArrays, load_arrays, save_arrays
from fmnist.tasks import CACHE_EXPIRATION, cache_digest
from fmnist.tracking import Tracker


def augment_params(cfg: AugmentConfig) -> AugmentParams:
    """The recipe part of the config, as the plain logic's dataclass."""
    return AugmentParams.of(cfg.model_dump())


def _augment_key(_: TaskRunContext, params: dict[str, Any]) -> str:
    # Content, not identity: the digest of the images being augmented, the recipe and the seed.
    ds: Dataset = params["dataset"]
    cfg: AugmentConfig = params["cfg"]
    return "augment-" + cache_digest(ds.digest, cfg.model_dump(), params["seed"], params["out_dir"])


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
    key = cache_digest(dataset.digest, cfg.model_dump(), seed)[:16]
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
    tracker.log.figure(run_id, fig, "augmentation/first_image_variants.png")


def read_augmented(ref: StoredArrays) -> tuple[np.ndarray, np.ndarray]:
    """Load stored augmented images (digest-checked)."""
    arrays = load_arrays(ref)
    return arrays["x"], arrays["y"]
