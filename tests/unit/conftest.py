"""The fast tests leave the process as they found it: a test that changes the environment
that MLflow, Prefect or Keras read (and does not restore it) fails, naming the variable,
instead of changing what a later test sees."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from fmnist.tracking.limits import BACKOFF_FACTOR, MAX_RETRIES, TIMEOUT

WATCHED = ("MLFLOW_", "PREFECT_", "KERAS_", "TF_", "CI")


# The tracker sets MLflow's request bounds for the whole process on purpose (tracking/limits.py).
MANAGED = (TIMEOUT, MAX_RETRIES, BACKOFF_FACTOR)


def _watched() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(WATCHED) and k not in MANAGED}


@pytest.fixture(autouse=True)
def environment_restored() -> Iterator[None]:
    """Fail a test that leaves a watched environment variable changed."""
    before = _watched()
    yield
    after = _watched()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        # Put it back so that one leak does not fail every later test too.
        for key in changed:
            if key in before:
                os.environ[key] = before[key]
            else:
                os.environ.pop(key, None)
        pytest.fail(f"the test left the environment changed: {', '.join(changed)}")
