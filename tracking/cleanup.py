"""Nothing half-logged: a model whose logging fails part way (a full disk, a dropped
connection) is marked FAILED and its partial files are removed, so that no truncated
model.keras sits in the artifact store looking like a model."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from fmnist.tracking.client import BoundedClient

log = logging.getLogger(__name__)


def abandon_pending_models(tracking_uri: str, run_id: str) -> list[str]:
    """Mark the run's logged models that never got READY as FAILED (MLflow marks some
    itself), delete them and their artifacts; return their ids. Best effort: what cannot be
    reached now is left."""
    from mlflow.entities import LoggedModelStatus
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client = BoundedClient(tracking_uri)
    experiment = client.get_run(run_id).info.experiment_id
    abandoned = []
    for model in client.search_logged_models(experiment_ids=[experiment]):
        if model.source_run_id != run_id or model.status == LoggedModelStatus.READY:
            continue
        with suppress(Exception):
            client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        with suppress(Exception):
            get_artifact_repository(model.artifact_location).delete_artifacts()
        with suppress(Exception):
            client.delete_logged_model(model.model_id)
        abandoned.append(model.model_id)
    return abandoned


@contextmanager
def no_half_logged_model(tracking_uri: str, run_id: str) -> Iterator[None]:
    """Around the logging of a model: if it fails, what it left is abandoned (see above)."""
    try:
        yield
    except BaseException:
        try:
            gone = abandon_pending_models(tracking_uri, run_id)
        except Exception as exc:  # the server may be what failed: keep the first error
            log.warning("could not clean up the model logging of run %s: %s", run_id, exc)
        else:
            if gone:
                log.warning("run %s: half-logged model(s) %s removed", run_id, ", ".join(gone))
        raise
