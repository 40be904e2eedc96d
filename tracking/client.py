"""A client of one tracking store whose every call is bounded and, when the server cannot be
reached, fails with TrackingUnavailable naming it; and MLflow's fluent API pointed at a store
for the length of a block."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from fmnist.conf.settings import settings
from fmnist.tracking.limits import TrackingUnavailable, is_unreachable, reaching


def resolve_tracking_uri(configured: str) -> str:
    """MLFLOW_TRACKING_URI in the environment wins over the profile's URI."""
    return settings().mlflow_tracking_uri or configured


def unreachable(exc: BaseException) -> bool:
    """True if an error means the tracking server could not be reached (not a refusal)."""
    return isinstance(exc, TrackingUnavailable) or is_unreachable(exc)


class BoundedClient:
    """MlflowClient for one store; each method call runs inside `reaching(uri)`."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            with reaching(self.tracking_uri):
                return attr(*args, **kwargs)

        return call


@contextmanager
def fluent_uri(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide (fluent) API at uri for a block; unreachable is named.

    mlflow.set_tracking_uri also writes MLFLOW_TRACKING_URI into os.environ, where
    resolve_tracking_uri would later take it for the user's choice and send the next run in
    this process to the previous run's store: the environment is put back afterwards.
    """
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        with reaching(uri):
            yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved
