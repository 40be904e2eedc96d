"""The load-and-normalize task: parse, subset, reshape and scale (stages/load.py)."""

from __future__ import annotations

from pathlib import Path

from fmnist.conf import DataConfig
from fmnist.stages.load import Dataset, load_dataset
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE


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
