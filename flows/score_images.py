"""The score-images flow: every image under a folder or fsspec URL classified by the served
model (the champion unless told), the predictions logged as a CSV to an MLflow run of their
own (tagged with the model version that answered) and shown as a Prefect table.

    python -c "from fmnist.flows.score_images import score_images; score_images('photos/')"

or, on the stack, the `score-images/score-images` deployment (from the dashboard, with the
source as its parameter, or on a schedule).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from fmnist.conf import DEFAULT_PROFILE, load_config
from fmnist.flows import SCORE_FLOW
from fmnist.stages.backend import apply_backend, resolve_backend
from fmnist.tasks.score import score
from fmnist.tracking import tracker_for


@flow(name=SCORE_FLOW, log_prints=True)
def score_images(
    source: str,
    model_uri: str | None = None,
    profile: str = DEFAULT_PROFILE,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Classify every image under source; return the run, the version used and the counts.

    Args:
        source: A folder or fsspec URL (s3://..., http://...) of images (PNG, JPEG, ...),
            searched recursively, or one image file.
        model_uri: The model to score with (default: serving.model_uri, else
            models:/<tracking.registered_model>@champion). An alias is pinned to its
            version when the flow starts: every image is scored by the same version.
        profile: conf/ profile for the tracking store, experiment and batch size.
        overrides: Any other setting, as dotted keys, e.g. {"serving.batch_size": 64}.
    """
    cfg = load_config(profile, overrides or {})
    apply_backend(resolve_backend(cfg.keras_backend))  # before the model imports keras
    if model_uri is None:
        model_uri = cfg.serving.model_uri
    if model_uri is None:
        if cfg.tracking.registered_model is None:
            raise ValueError("tracking.registered_model is null: give model_uri")
        model_uri = f"models:/{cfg.tracking.registered_model}@champion"
    tracker = tracker_for(cfg.tracking)
    result = score(source, model_uri, tracker, cfg.serving.batch_size)
    get_run_logger().info(
        "%d images scored by %s version %s (%d failed); predictions in MLflow run %s",
        result.images,
        model_uri,
        result.model_version,
        result.failed,
        result.run_id,
    )
    return {
        "run_id": result.run_id,
        "model_uri": model_uri,
        "model_version": result.model_version,
        "images": result.images,
        "failed": result.failed,
    }
