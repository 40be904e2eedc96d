"""Opening a tracking store: its URI, a local SQLite store made safely on first use, and the
experiment (created if needed)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fmnist.tracking.client import BoundedClient, resolve_tracking_uri
from fmnist.tracking.limits import RequestLimits, reaching
from fmnist.tracking.runs import Tracker


def _prepare_local_store(uri: str) -> None:
    # SQLite does not create the folder its database file lives in.
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        db.parent.mkdir(parents=True, exist_ok=True)


@contextmanager
def _first_use_lock(uri: str) -> Iterator[None]:
    """Serialise the first use of a SQLite store across processes.

    Two runs opening a fresh SQLite store at once would both create its schema (MLflow runs
    its migrations on first use) and one fails with `duplicate column name`; both would also
    create the experiment. A file lock next to the database makes the second wait until the
    first is done; servers (http) and other databases handle their own concurrency.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    db = Path(uri.removeprefix("sqlite:///"))
    with FileLock(f"{db}.lock", timeout=300):
        yield


def open_tracker(
    tracking_uri: str,
    experiment: str,
    artifact_location: str | None = None,
    spool_dir: str | None = None,
    *,
    limits: RequestLimits | None = None,
) -> Tracker:
    """Connect to the store (creating a local SQLite store and the experiment if needed).

    With spool_dir, writes the server cannot take while it is away wait there
    (tracking/spool.py). limits: bounds on each call to a tracking server
    (tracking.request_timeout_s, ...), applied before the first request; an unreachable
    server raises TrackingUnavailable.
    """
    uri = resolve_tracking_uri(tracking_uri)
    (limits or RequestLimits()).apply()
    _prepare_local_store(uri)
    with reaching(uri), _first_use_lock(uri):
        return _open_experiment(uri, experiment, artifact_location, spool_dir)


def tracker_for(settings: Any) -> Tracker:
    """The tracker a tracking config asks for: its store and experiment, its spool, and its
    bounds on calls to a server (tracking.request_timeout_s, max_retries, backoff_factor)."""
    return open_tracker(
        settings.tracking_uri,
        settings.experiment,
        settings.artifact_location,
        settings.spool_dir,
        limits=RequestLimits.of(settings),
    )


def _open_experiment(
    uri: str, experiment: str, artifact_location: str | None, spool_dir: str | None
) -> Tracker:
    client = BoundedClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        return Tracker(uri, exp.experiment_id, experiment, spool_dir)
    location = None
    # A relative artifact folder only makes sense next to a local store; a server picks
    # (and serves) its own artifact root.
    if artifact_location and not uri.startswith(("http://", "https://")):
        if "://" in artifact_location:
            location = artifact_location
        else:
            path = Path(artifact_location).expanduser().resolve()
            path.mkdir(parents=True, exist_ok=True)
            location = path.as_uri()
    exp_id = client.create_experiment(experiment, artifact_location=location)
    return Tracker(uri, exp_id, experiment, spool_dir)
