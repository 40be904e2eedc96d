"""The reclaim-runs task: find pipeline runs whose process died, end them, and pick the one
this run resumes (same resolved config and data), so a killed run is neither left RUNNING
forever nor trained again from scratch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fmnist.tracking import PARENT_TAG, Tracker
from fmnist.tracking.ownership import orphaned
from fmnist.tracking.provenance import CONFIG_DIGEST, DATASET_DIGEST, FLOW_RUN_ID
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

PIPELINE_RUNS = "tags.flow = 'fashion-mnist-pipeline'"


def _crash_flow_run(flow_run_id: str, reason: str) -> bool:
    """Mark a Prefect flow run that still says Running as Crashed; True if it was."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        try:
            state = client.read_flow_run(flow_run_id).state
        except Exception:  # another API (a server since gone, another PREFECT_HOME)
            return False
        if state is None or not state.is_running():
            return False
        client.set_flow_run_state(flow_run_id, Crashed(message=reason), force=True)
        return True


def _end_orphan(tracker: Tracker, run: Any, reason: str) -> None:
    """End an orphaned parent, its unfinished children, and its Prefect flow run."""
    parent_id = run.info.run_id
    for child in tracker.find_runs(
        f"tags.`{PARENT_TAG}` = '{parent_id}' and attributes.status = 'RUNNING'"
    ):
        tracker.end_run(child.info.run_id, killed=True, reason=reason)
    tracker.end_run(parent_id, killed=True, reason=reason)
    if flow_run_id := run.data.tags.get(FLOW_RUN_ID):
        _crash_flow_run(flow_run_id, reason)


@task(name="reclaim-runs", cache_policy=NO_CACHE)
def reclaim(
    tracker: Tracker,
    checkpoint_root: str,
    config_digest: str,
    dataset_digest: str,
    fresh: bool = False,
) -> str | None:
    """End the pipeline runs whose process died; return the id of the run to resume, if any.

    A run is resumed when it was killed (or its process died) with the same resolved config
    and dataset, and its checkpoints are on this machine; `fresh` resumes nothing.
    """
    logger = get_run_logger()
    root = Path(checkpoint_root)
    dead = [
        r
        for r in tracker.find_runs(f"{PIPELINE_RUNS} and attributes.status = 'RUNNING'")
        if orphaned(root / r.info.run_id)
    ]
    killed = tracker.find_runs(f"{PIPELINE_RUNS} and attributes.status = 'KILLED'")
    resume = None
    if not fresh:
        for run in sorted(dead + killed, key=lambda r: r.info.start_time, reverse=True):
            tags = run.data.tags
            if (
                tags.get(CONFIG_DIGEST) == config_digest
                and tags.get(DATASET_DIGEST) == dataset_digest
                and (root / run.info.run_id).is_dir()
            ):
                resume = run.info.run_id
                break
    reason = "its process died (no owner holds its lock); found by a later pipeline run"
    for run in dead:
        if run.info.run_id != resume:
            _end_orphan(tracker, run, reason)
            logger.warning("run %s: %s; ended KILLED", run.info.run_id, reason)
        elif flow_run_id := run.data.tags.get(FLOW_RUN_ID):
            _crash_flow_run(flow_run_id, reason)  # the MLflow run goes on; that process is gone
    if resume:
        logger.info("resuming run %s: same config and data, killed before it finished", resume)
    return resume
