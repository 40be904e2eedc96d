"""The load-and-normalize task: parse, subset, reshape and scale (stages/load.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from fmnist.conf import DataConfig
from fmnist.stages.load import Dataset, load_dataset
from fmnist.tracking import Tracker

TRAIN_SET = "fashion-mnist-train"
TEST_SET = "fashion-mnist-test"


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


def log_datasets(
    tracker: Tracker,
    run_id: str,
    ds: Dataset,
    train: tuple[np.ndarray, np.ndarray, str, str],
    source: str,
) -> None:
    """Record a run's training set (x, y, name, digest) and the test set as MLflow dataset
    inputs; source: the folder the IDX files were read from."""
    x, y, name, digest = train
    tracker.log.dataset(run_id, x, y, name=name, digest=digest, context="training", source=source)
    tracker.log.dataset(
        run_id,
        ds.x_test,
        ds.y_test,
        name=TEST_SET,
        digest=ds.digest,
        context="evaluation",
        source=source,
    )
