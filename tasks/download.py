"""The download task: fetch and verify the four IDX files (stages/download.py), cached."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.context import TaskRunContext

from fmnist.conf import DataConfig
from fmnist.stages.download import (
    FILES,
    FetchOptions,
    OutOfTime,
    dataset_digest,
    fetch_all,
    rich_progress,
)
from fmnist.tasks import CACHE_EXPIRATION, cache_digest


def _download_key(_: TaskRunContext, params: dict[str, Any]) -> str:
    # The content is pinned by digest, so the key is the pinned digests plus where the
    # verified copies live: changing the mirrors cannot change what the task returns.
    cfg: DataConfig = params["cfg"]
    return "download-" + cache_digest(dataset_digest(), str(Path(cfg.cache_dir).resolve()))


def _retry_in_time(task: Any, task_run: Any, state: Any) -> bool:
    # A download that ran out of its whole deadline is not tried again.
    return not isinstance(state.data, OutOfTime)


@task(
    name="download",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=_retry_in_time,
    cache_key_fn=_download_key,
    cache_expiration=CACHE_EXPIRATION,
    persist_result=True,
)
def download(cfg: DataConfig, until: float | None = None) -> dict[str, str]:
    """Fetch and verify the four IDX files into the cache folder; return name -> path.

    until: the wall-clock time (time.time()) by which the whole download, this task's
    retries included, must be done (the flow sets it from data.download_deadline_s).
    """
    logger = get_run_logger()
    logger.info("fetching %d files; sources in order: %s", len(FILES), ", ".join(cfg.sources))
    opts = FetchOptions(
        timeout=cfg.http_timeout_s,
        retries=cfg.http_retries,
        backoff=cfg.http_backoff_s,
        deadline=cfg.http_deadline_s,  # the whole file, not one read: a trickle cannot stall it
        until=until,
        progress=rich_progress(logger.info),
    )
    paths = fetch_all(
        cfg.sources,
        Path(cfg.cache_dir),
        opts,
        on_file=lambda name, origin: logger.info("%s: sha256 verified (from %s)", name, origin),
    )
    return {name: str(path) for name, path in paths.items()}
