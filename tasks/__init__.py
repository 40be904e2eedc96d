"""Prefect tasks, one module per stage, each a thin shell over its plain logic in stages/.

    tasks/download.py  -> stages/download.py      tasks/train.py    -> stages/train.py
    tasks/load.py      -> stages/load.py          tasks/evaluate.py -> stages/evaluate.py
    tasks/augment.py   -> stages/augment.py       tasks/compare.py  -> stages/compare.py
    tasks/resume.py    -> stages/checkpoint.py    tasks/promote.py  -> stages/champion.py

A task adds what Prefect gives (retries, caching, logs, artifacts) and decides what its stage
logs to MLflow, through the tracker (tracking/, the only module that imports mlflow).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

CACHE_EXPIRATION = timedelta(days=30)


def cache_digest(*parts: Any) -> str:
    """A stable SHA-256 of JSON-able parts, for cache keys and content-addressed names."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def artifact_key(name: str) -> str:
    """A Prefect artifact key from a name: lowercase letters, digits and dashes only."""
    return "".join(c if c.isalnum() else "-" for c in name.lower())


def run_cached(task: Any, *args: Any, still_valid: Callable[[Any], bool], **kwargs: Any) -> Any:
    """Run a cached task; say in the logs when the cache served it; refresh a stale entry.

    A cache record can outlive the files it points to, or their content (a deleted data
    folder, a damaged file): still_valid checks them against their digests, and warns, and
    the task runs again with refresh_cache instead of handing bad data downstream.
    """
    from prefect import get_run_logger

    logger = get_run_logger()
    state = task(*args, return_state=True, **kwargs)
    result = state.result()
    if state.name == "Cached":
        if still_valid(result):
            logger.info("%s: inputs unchanged, reused the cached result (stage skipped)", task.name)
            return result
        logger.warning("%s: cached result is no longer valid; running it again", task.name)
        return task.with_options(refresh_cache=True)(*args, **kwargs)
    return result
