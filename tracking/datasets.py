"""The prepared dataset as an artifact of the pipeline's run on the tracking server.

Workers on other machines fetch it through the server's artifact proxy (`--serve-artifacts`)
with the MLflow credential they hold already: no shared disk, no bucket, no second secret.
The file is named after its SHA-256 and the reference handed to workers is a `runs:/` URI,
which each resolves against its own tracking URI (the server's address differs by machine).
"""

from __future__ import annotations

from pathlib import Path

from fmnist.tracking.limits import reaching
from fmnist.tracking.runs import Tracker

FOLDER = "datasets"  # under the pipeline run's artifacts


def publish(tracker: Tracker, run_id: str, local: Path) -> str:
    """Upload local (named dataset-<sha256>.npz) as an artifact of run_id unless it is there
    (a resumed run publishes the same file again); return its runs:/ URI."""
    run_id = tracker.log.resolve(run_id)  # a run made while the server was away has its id now
    client = tracker.client
    there = {item.path for item in client.list_artifacts(run_id, FOLDER)}
    if f"{FOLDER}/{local.name}" not in there:
        client.log_artifact(run_id, str(local), FOLDER)
    return f"runs:/{run_id}/{FOLDER}/{local.name}"


def download(uri: str, dest: Path, tracking_uri: str) -> None:
    """Download an artifact (runs:/ or mlflow-artifacts: URI) to the file dest."""
    import mlflow.artifacts

    with reaching(tracking_uri):
        got = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(dest.parent), tracking_uri=tracking_uri
            )
        )
    if got != dest:
        got.replace(dest)
