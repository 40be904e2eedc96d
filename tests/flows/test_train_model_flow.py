"""The train-model flow does not train for a pipeline that is gone: a training run queued by a
pipeline run that has since failed or crashed (a stack restart, a killed process) ends
Cancelled before it fetches the dataset, and no MLflow run is made for it."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect import task
from prefect.client.orchestration import get_client
from prefect.flow_engine import run_flow
from prefect.states import Crashed, Running

from fmnist.conf import load_config
from fmnist.flows.train_model import train_model_flow
from fmnist.stages.models import REGISTRY
from fmnist.tracking import Tracker, open_tracker

pytestmark = pytest.mark.e2e


@task
def stand_in() -> None:
    """The pipeline's task that started the training run (never run here)."""


@pytest.fixture
def tracker(tmp_path, monkeypatch) -> Tracker:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return open_tracker(f"sqlite:///{tmp_path}/mlflow.db", "fashion-mnist-cnn", str(tmp_path))


def parameters(tracker: Tracker, parent: str, root: Path) -> dict[str, object]:
    cfg = load_config(
        "smoke",
        {
            "tracking.tracking_uri": tracker.tracking_uri,
            "tracking.spool_dir": str(root / "spool"),
            "train.checkpoint_dir": str(root / "checkpoints"),
        },
        known_models=REGISTRY,
    )
    return {
        "model_name": "pool_dropout",
        "dataset_uri": str(root / "no-such-dataset.npz"),  # never fetched
        "dataset_sha256": "0" * 64,
        "parent_run_id": parent,
        "config": cfg.model_dump(),
    }


def test_a_run_whose_mlflow_parent_ended_is_cancelled_before_training(harness, tracker, tmp_path):
    parent = tracker.start_run("pipeline-smoke")
    tracker.end_run(parent, failed=True, reason="a model failed")
    state = train_model_flow(**parameters(tracker, parent, tmp_path), return_state=True)
    assert state.is_cancelled(), state
    assert f"its pipeline run {parent} is FAILED" in state.message
    assert tracker.child_runs(parent) == {}


def test_a_run_whose_pipeline_flow_run_crashed_is_cancelled_before_training(
    harness, tracker, tmp_path
):
    parent = tracker.start_run("pipeline-smoke")  # still RUNNING: its process was killed
    with get_client(sync_client=True) as client:
        pipeline = client.create_flow_run(train_model_flow, state=Running())
        link = client.create_task_run(stand_in, pipeline.id, dynamic_key="0")
        queued = client.create_flow_run(
            train_model_flow,
            parameters=parameters(tracker, parent, tmp_path),
            parent_task_run_id=link.id,
        )
        client.set_flow_run_state(pipeline.id, Crashed(message="stack restarted"), force=True)
    state = run_flow(
        train_model_flow,
        flow_run=queued,
        parameters=parameters(tracker, parent, tmp_path),
        return_type="state",
    )
    assert state.is_cancelled(), state
    assert f"its pipeline flow run {pipeline.id} is Crashed" in state.message
    assert tracker.child_runs(parent) == {}
