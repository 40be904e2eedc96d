"""The prepared dataset between the pipeline and its training runs (-> stages/store.py, and
tracking/datasets.py for the tracking server's artifact store).

`publish` puts it where every training worker reaches it: by default (data.store_uri auto)
the pipeline run's artifacts on the tracking server when there is one, else a folder or any
fsspec URL. `fetch` gets it on a worker, verified against its SHA-256, through the machine's
cache (FMNIST_DATASET_CACHE): the models of a run download it once per machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from fmnist.conf.settings import settings
from fmnist.stages.store import (
    TRACKING_STORE,
    DatasetRef,
    cached_dataset,
    cached_name,
    fetch_dataset,
    in_tracking_store,
    publish_dataset,
    resolve_store,
    save_arrays,
)
from fmnist.tracking import Tracker, datasets


def publish(
    store_uri: str, arrays: dict[str, np.ndarray], tracker: Tracker | None, run_id: str
) -> DatasetRef:
    """Publish the arrays for training runs; the reference names the file and its digest."""
    store = resolve_store(store_uri, tracker.tracking_uri if tracker else "")
    if store != TRACKING_STORE:
        return publish_dataset(store, **arrays)
    if tracker is None:
        raise ValueError("data.store_uri=mlflow needs the pipeline run's tracker")
    with tempfile.TemporaryDirectory(prefix="fmnist-publish-") as tmp:
        saved = save_arrays(Path(tmp) / "dataset.npz", **arrays)
        local = Path(saved.path).rename(Path(tmp) / cached_name(saved.sha256))
        uri = datasets.publish(tracker, run_id, local)
        _keep_in_cache(local)  # a worker on this machine then needs no download
    return DatasetRef(uri, saved.sha256)


def _keep_in_cache(local: Path) -> None:
    cache = settings().dataset_cache_dir()
    target = cache / local.name
    with contextlib.suppress(OSError):  # a cache that cannot be written is only slower
        cache.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            partial = cache / f".{local.name}.{os.getpid()}.partial"
            shutil.copyfile(local, partial)
            partial.replace(target)  # never a half-written file under the final name


def fetch(ref: DatasetRef, tracking_uri: str) -> dict[str, np.ndarray]:
    """The published arrays, verified against ref.sha256, through this machine's cache (the
    run's log says whether it downloaded them or found them there)."""
    cache = settings().dataset_cache_dir()
    if not in_tracking_store(ref.uri):
        return fetch_dataset(ref, cache)
    downloaded = []

    def download(dest: Path) -> None:
        datasets.download(ref.uri, dest, tracking_uri)
        downloaded.append(dest)

    arrays = cached_dataset(ref, cache, download)
    how = "downloaded into" if downloaded else "found in"
    _logger().info("dataset %s %s this machine's cache %s", ref.sha256[:12], how, cache)
    return arrays


def _logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:  # outside a flow run (tests, scripts)
        return logging.getLogger(__name__)
