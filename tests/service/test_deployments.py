"""Deployments on a real Prefect server (PostgreSQL), run by real workers, tracked in a real
MLflow server: what a user does from the dashboard, done through the same API calls."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from stages.models import REGISTRY

pytestmark = pytest.mark.service

DASHBOARD_FIELDS = {"profile", "models", "epochs", "batch_size", "seed"}


@pytest.fixture(scope="module")
def prefect_api(service_stack):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: service_stack.prefect_api_url}):
        yield service_stack.prefect_api_url


@pytest.fixture(scope="module")
def applied(prefect_api):
    from conf import load_config as resolve_config
    from flows.deployments import apply

    return apply(resolve_config("smoke"))


def wait_final(client, flow_run_id, timeout: float = 900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(2)
    raise AssertionError(f"flow run {flow_run_id} not final after {timeout} s")


def test_deployments_schedule_and_dashboard_form(applied):
    from prefect.client.orchestration import get_client

    assert set(applied) == {"fashion-mnist-pipeline/pipeline", "train-model/train-model"}
    with get_client(sync_client=True) as client:
        pipeline = client.read_deployment_by_name("fashion-mnist-pipeline/pipeline")
        train = client.read_deployment_by_name("train-model/train-model")
    assert pipeline.work_pool_name == "cpu"
    assert train.work_pool_name == "gpu"
    (schedule,) = pipeline.schedules
    assert schedule.schedule.cron == "0 2 * * *"
    assert schedule.schedule.timezone == "UTC"
    assert schedule.active
    assert pipeline.parameters == {"profile": "quick", "train_mode": "deployments"}
    # The custom-run form is generated from this schema: typed fields with descriptions.
    props = pipeline.parameter_openapi_schema["properties"]
    assert props.keys() >= DASHBOARD_FIELDS
    for name in DASHBOARD_FIELDS:
        assert props[name].get("description"), name
    assert props["profile"]["default"] == "quick"


def test_applying_twice_updates_in_place(applied):
    from conf import load_config as resolve_config
    from flows.deployments import apply

    again = apply(resolve_config("smoke", overrides={"deploy.schedule.active": False}))
    assert again == applied  # same deployment ids
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        pipeline = client.read_deployment_by_name("fashion-mnist-pipeline/pipeline")
    assert [s.active for s in pipeline.schedules] == [False]
    apply(resolve_config("smoke"))  # back on, for the other tests


def test_dashboard_run_trains_four_models_on_the_gpu_pool(
    applied, service_stack, service_workers, tmp_path_factory
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    data = tmp_path_factory.mktemp("service-data")
    overrides = {
        "data.cache_dir": str(data / "fashion-mnist"),
        "data.prepared_dir": str(data / "prepared"),
        "data.store_uri": str(data / "store"),
        "tracking.experiment": "service-e2e",
    }
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("fashion-mnist-pipeline/pipeline")
        # What the dashboard's Run > Custom run button sends.
        flow_run = client.create_flow_run_from_deployment(
            deployment.id, parameters={"profile": "smoke", "overrides": overrides}
        )
        assert flow_run.parameters["train_mode"] == "deployments"  # the deployment's default
        done = wait_final(client, flow_run.id)
        assert done.state.is_completed(), done.state.message
        training = client.read_flow_runs(
            deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[applied["train-model/train-model"]])
            )
        )
        ours = [
            r
            for r in training
            if r.parameters.get("config", {}).get("tracking", {}).get("experiment") == "service-e2e"
        ]
        assert sorted(r.parameters["model_name"] for r in ours) == sorted(REGISTRY)
        assert all(r.state.is_completed() for r in ours)
        assert {r.work_pool_name for r in ours} == {"gpu"}
        assert {r.parent_task_run_id is not None for r in ours} == {True}  # subflows of the run

    # Everything reached the MLflow server, artifacts included, through the server.
    client = MlflowClient(tracking_uri=service_stack.mlflow_url)
    exp = client.get_experiment_by_name("service-e2e")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.info.run_name for r in children) == sorted(REGISTRY)
    for child in children:
        assert child.info.status == "FINISHED"
        assert 0.0 <= child.data.metrics["test_accuracy"] <= 1.0
        assert [m.step for m in client.get_metric_history(child.info.run_id, "val_accuracy")] == [1]
        assert child.info.artifact_uri.startswith("mlflow-artifacts:")
        local = client.download_artifacts(
            child.info.run_id, "learning_curves.png", str(tmp_path_factory.mktemp("dl"))
        )
        assert Path(local).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = parents[0].data.metrics
    assert {f"test_accuracy.{m}" for m in REGISTRY} <= set(summary)


def test_failed_training_run_fails_its_parent_with_the_reason(applied, service_workers):
    """A training child with a bad model name in its parameters: the parent flow fails and
    says which child and why (run_deployment alone would let the parent succeed)."""
    from prefect import flow

    from flows.dispatch import run_all
    from flows.pipeline import TrainingRunsFailed

    @flow(name="service-test-parent")
    def parent() -> None:
        failures = run_all(
            "train-model/train-model",
            {
                "resnet": {
                    "model_name": "resnet",
                    "dataset_uri": "/nonexistent.npz",
                    "dataset_sha256": "0" * 64,
                    "parent_run_id": "none",
                    "config": {},
                }
            },
            poll_interval=1,
        )
        if failures:
            raise TrainingRunsFailed("; ".join(f"{m}: {why}" for m, why in failures.items()))

    state = parent(return_state=True)
    assert state.is_failed()
    assert "resnet: Failed" in state.message
    assert "unknown model 'resnet'" in state.message
