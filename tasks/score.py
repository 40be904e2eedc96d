"""The score-images task: every image under a folder or fsspec URL through the served model
(stages/score.py for the files and rows, tracking/serving.py for the model), the predictions
as a CSV on an MLflow run of their own and as a Prefect table."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from fmnist.stages.score import Scored, list_images, read_batches, to_csv
from fmnist.stages.serving import BadInput
from fmnist.tracking import Tracker
from fmnist.tracking.provenance import prefect_flow_run

PREDICTIONS = "predictions.csv"  # the artifact on the scoring run
TABLE_ROWS = 500  # rows shown in the Prefect table; the CSV has them all
# Tags of a scoring run.
SCORED_MODEL = "scored.model_uri"  # the URI asked for (models:/NAME@champion)
SCORED_VERSION = "scored.model_version"  # the version that answered
SCORED_SOURCE = "scored.source"


@dataclass(frozen=True)
class ScoringResult:
    """What a scoring run did: where, with which version, how many images."""

    run_id: str
    model_uri: str
    model_version: str
    images: int
    failed: int
    rows: list[dict[str, Any]]


@task(name="score-images", cache_policy=NO_CACHE)
def score(source: str, model_uri: str, tracker: Tracker, batch_size: int) -> ScoringResult:
    """Predict every image under source with model_uri (an alias is pinned to its version
    first); log the predictions CSV to a new run, and a table artifact to Prefect."""
    from fmnist.tracking.serving import ServedModel, resolve_target

    logger = get_run_logger()
    target = resolve_target(tracker.tracking_uri, model_uri)
    if target is None:
        raise ValueError(f"no {model_uri} in {tracker.tracking_uri}")
    urls = list_images(source)
    tags = {SCORED_MODEL: model_uri, SCORED_VERSION: target.version, SCORED_SOURCE: source}
    with tracker.run("score-images", tags=tags | prefect_flow_run()) as run_id:
        model = ServedModel(tracker.tracking_uri, target)
        logger.info("scoring %d images from %s with %s", len(urls), source, target.uri)
        started = time.monotonic()
        scored: list[Scored] = []
        for batch in read_batches(urls, batch_size):
            scored.extend(_score_batch(model, batch))
        seconds = time.monotonic() - started
        rows = [s.row() for s in scored]
        failed = sum(1 for s in scored if s.error)
        tracker.log.text(run_id, to_csv(rows), PREDICTIONS)
        tracker.log.metrics(
            run_id,
            {"images": len(rows), "failed": failed, "images_per_second": len(rows) / seconds},
        )
    create_table_artifact(
        key="score-images",
        table=[_plain(r) for r in rows[:TABLE_ROWS]],
        description=f"{len(rows)} images from {source} scored by {target.uri} (version "
        f"{target.version}); {failed} failed; all rows in MLflow run {run_id}, {PREDICTIONS}"
        + (f" (the first {TABLE_ROWS} shown)" if len(rows) > TABLE_ROWS else ""),
    )
    logger.info("%d images scored, %d failed: MLflow run %s", len(rows), failed, run_id)
    return ScoringResult(run_id, model_uri, target.version, len(rows), failed, rows)


def _score_batch(model: Any, batch: list[tuple[str, bytes | str]]) -> list[Scored]:
    """One model call for the batch; if an image in it is bad, one call per image, so that
    only the bad ones fail (a call answers all or nothing)."""
    readable = [(url, data) for url, data in batch if isinstance(data, bytes)]
    answers: dict[str, Scored] = {
        url: Scored(url, error=data) for url, data in batch if isinstance(data, str)
    }
    if not readable:
        return [answers[url] for url, _ in batch]
    try:
        found = model.predict([data for _, data in readable])
        answers |= {url: _scored(url, a) for (url, _), a in zip(readable, found, strict=True)}
    except BadInput:
        for url, data in readable:
            try:
                answers[url] = _scored(url, model.predict([data])[0])
            except BadInput as exc:
                answers[url] = Scored(url, error=_unnumbered(str(exc)))
    return [answers[url] for url, _ in batch]


def _scored(url: str, answer: dict[str, Any]) -> Scored:
    warning = answer.get("warning")
    return Scored(
        url,
        int(answer["class_index"]),
        str(answer["class_name"]),
        [float(p) for p in answer["probabilities"]],
        _unnumbered(warning) if isinstance(warning, str) else None,
    )


def _unnumbered(message: str) -> str:
    # "image 3: ..." numbers the image within one model call; a row names its file instead.
    return re.sub(r"^image \d+: ", "", message)


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    # 0.4860000014305115 reads worse than 0.486 in the dashboard's table.
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
