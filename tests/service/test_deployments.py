"""Deployments on the real, authenticated stack (PostgreSQL, Prefect server, MLflow server,
workers as the service user): what a user does from the dashboard, done through the same API
calls; and nothing a run logs contains a secret.

No schedule is active in the test stack: the deployments are applied with it off, and the
test that turns it on turns it off again in `finally`."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fmnist.stages.models import REGISTRY

pytestmark = pytest.mark.service

EXPERIMENT = "service-e2e"
DASHBOARD_FIELDS = {"profile", "models", "epochs", "batch_size", "seed"}


SCHEDULE_OFF = {"deploy.schedule.active": False}


@pytest.fixture(scope="module")
def prefect_api(service_stack):
    with service_stack.prefect_settings():
        yield service_stack.prefect_api_url


@pytest.fixture(scope="module")
def applied(prefect_api):
    from fmnist.conf import load_config as resolve_config
    from fmnist.stack.deployments import apply

    return apply(resolve_config("smoke", overrides=SCHEDULE_OFF), local=True)


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

    assert set(applied) == {
        "fashion-mnist-pipeline/pipeline",
        "train-model/train-model",
        "certify/certify",
        "score-images/score-images",
    }
    with get_client(sync_client=True) as client:
        pipeline = client.read_deployment_by_name("fashion-mnist-pipeline/pipeline")
        train = client.read_deployment_by_name("train-model/train-model")
        certify = client.read_deployment_by_name("certify/certify")
        score = client.read_deployment_by_name("score-images/score-images")
    assert pipeline.work_pool_name == certify.work_pool_name == score.work_pool_name == "cpu"
    assert train.work_pool_name == "gpu"
    assert certify.parameters == {"profile": "quick", "train_mode": "deployments"}
    assert not certify.schedules
    assert "seeds" in certify.parameter_openapi_schema["properties"]
    assert not score.schedules  # no serving.score_source: nothing to score nightly
    assert score.parameter_openapi_schema["required"] == ["source"]
    (schedule,) = pipeline.schedules
    assert schedule.schedule.cron == "0 2 * * *"
    assert schedule.schedule.timezone == "UTC"
    assert not schedule.active  # never on in a test stack
    assert pipeline.parameters == {"profile": "quick", "train_mode": "deployments"}
    # The custom-run form is generated from this schema: typed fields with descriptions.
    props = pipeline.parameter_openapi_schema["properties"]
    assert props.keys() >= DASHBOARD_FIELDS
    for name in DASHBOARD_FIELDS:
        assert props[name].get("description"), name
    assert props["profile"]["default"] == "quick"


def test_flow_runs_whose_heartbeats_stop_are_crashed_by_an_automation(applied):
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType

    from fmnist.stack.automations import ZOMBIE_AFTER_S, ZOMBIE_AUTOMATION

    automation = Automation.read(name=ZOMBIE_AUTOMATION)
    assert automation.enabled
    trigger = automation.trigger
    assert trigger.posture == "Proactive"
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert {"prefect.flow-run.Completed", "prefect.flow-run.Failed"} <= trigger.expect
    assert trigger.within.total_seconds() == ZOMBIE_AFTER_S
    (action,) = automation.actions
    assert action.state == StateType.CRASHED
    from fmnist.conf import load_config
    from fmnist.stack.deployments import apply  # applying again keeps one automation, not two

    apply(load_config("smoke", overrides=SCHEDULE_OFF), local=True)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        assert len(client.read_automations_by_name(ZOMBIE_AUTOMATION)) == 1


def test_a_score_source_schedules_score_images(applied):
    from prefect.client.orchestration import get_client

    from fmnist.conf import load_config as resolve_config
    from fmnist.stack.deployments import apply

    source = "/srv/incoming-images"
    try:
        apply(resolve_config("smoke", {**SCHEDULE_OFF, "serving.score_source": source}), local=True)
        with get_client(sync_client=True) as client:
            score = client.read_deployment_by_name("score-images/score-images")
        (schedule,) = score.schedules
        assert schedule.schedule.cron == "0 4 * * *" and not schedule.active
        assert score.parameters == {"profile": "quick", "source": source}
    finally:
        apply(resolve_config("smoke", overrides=SCHEDULE_OFF), local=True)  # as the others expect
    with get_client(sync_client=True) as client:  # the source unset: the schedule is gone
        assert not client.read_deployment_by_name("score-images/score-images").schedules


def test_applying_twice_updates_in_place(applied):
    from prefect.client.orchestration import get_client

    from fmnist.conf import load_config as resolve_config
    from fmnist.stack.deployments import apply

    try:
        again = apply(resolve_config("smoke"), local=True)  # the profile's schedule: on
        assert again == applied  # same deployment ids
        with get_client(sync_client=True) as client:
            pipeline = client.read_deployment_by_name("fashion-mnist-pipeline/pipeline")
        assert [s.active for s in pipeline.schedules] == [True]
    finally:
        off = resolve_config("smoke", overrides=SCHEDULE_OFF)
        apply(off, local=True)  # off again, whatever happened
    with get_client(sync_client=True) as client:
        pipeline = client.read_deployment_by_name("fashion-mnist-pipeline/pipeline")
    assert [s.active for s in pipeline.schedules] == [False]


@pytest.fixture(scope="module")
def dashboard_run(applied, service_stack):
    """The pipeline triggered as the dashboard's Run > Custom run does (smoke profile), run
    to its end by the workers; (flow run, its training runs)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    data = service_stack.data_dir("service-e2e")  # the workers' user writes there
    overrides = {
        "data.cache_dir": str(data / "fashion-mnist"),
        "data.prepared_dir": str(data / "prepared"),
        "data.store_uri": str(data / "store"),
        "tracking.experiment": EXPERIMENT,
    }
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("fashion-mnist-pipeline/pipeline")
        # What the dashboard's Run > Custom run button sends.
        flow_run = client.create_flow_run_from_deployment(
            deployment.id, parameters={"profile": "smoke", "overrides": overrides}
        )
        assert flow_run.parameters["train_mode"] == "deployments"  # the deployment's default
        done = wait_final(client, flow_run.id)
        training = client.read_flow_runs(
            deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[applied["train-model/train-model"]])
            )
        )
    ours = [
        r
        for r in training
        if r.parameters.get("config", {}).get("tracking", {}).get("experiment") == EXPERIMENT
    ]
    return done, ours


def test_dashboard_run_trains_four_models_on_the_gpu_pool(
    dashboard_run, service_stack, tmp_path_factory
):
    from fmnist.stack import pools

    done, ours = dashboard_run
    assert done.state.is_completed(), done.state.message
    assert sorted(r.parameters["model_name"] for r in ours) == sorted(REGISTRY)
    assert all(r.state.is_completed() for r in ours)
    assert {r.work_pool_name for r in ours} == {"gpu"}
    assert {r.parent_task_run_id is not None for r in ours} == {True}  # subflows of the run
    # The gpu pool's limit: never more training runs at once than it allows (they queue).
    limit = pools.gpu_concurrency()
    assert limit < len(ours)  # else this proves nothing
    events = sorted([(r.start_time, 1) for r in ours] + [(r.end_time, -1) for r in ours])
    running = list(itertools.accumulate(step for _, step in events))
    assert max(running) <= limit, f"{max(running)} training runs at once, limit {limit}"

    # Everything reached the MLflow server, artifacts included, through the server.
    client = MlflowClient(tracking_uri=service_stack.mlflow_url)
    exp = client.get_experiment_by_name(EXPERIMENT)
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
        # Logged as the MLflow user `pipeline` by a process of the service user, not root.
        assert child.info.user_id != "root"
    summary = parents[0].data.metrics
    assert {f"test_accuracy.{m}" for m in REGISTRY} <= set(summary)


def test_no_secret_in_anything_the_run_logged(dashboard_run, service_stack, tmp_path_factory):
    """Every param, tag, metric key, artifact (downloaded) and Prefect log line of the run
    and its training runs, and the flow runs' parameters: none contains a secret."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    secrets = service_stack.secrets.values()
    done, ours = dashboard_run
    assert done.state.is_completed(), done.state.message

    def clean(what: str, text: str) -> None:
        leaked = [i for i, value in enumerate(secrets) if value in text]
        assert not leaked, f"secret #{leaked} found in {what}"  # never the value itself

    client = MlflowClient(tracking_uri=service_stack.mlflow_url)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 + len(REGISTRY)
    checked_files = 0
    for run in runs:
        clean(f"params of {run.info.run_name}", json.dumps(run.data.params))
        clean(f"tags of {run.info.run_name}", json.dumps(run.data.tags))
        clean(f"metric keys of {run.info.run_name}", json.dumps(sorted(run.data.metrics)))
        root = Path(
            client.download_artifacts(run.info.run_id, "", str(tmp_path_factory.mktemp("a")))
        )
        for path in root.rglob("*"):
            if path.is_file():
                clean(
                    f"artifact {path.name} of {run.info.run_name}",
                    path.read_bytes().decode("latin-1"),
                )
                checked_files += 1
    assert checked_files > len(runs)  # the runs did log artifacts

    flow_run_ids = [done.id, *(r.id for r in ours)]
    logs = []
    with get_client(sync_client=True) as prefect:
        log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids))
        while page := prefect.read_logs(log_filter=log_filter, limit=200, offset=len(logs)):
            logs += page  # the API answers at most 200 at a time
        for run_id in flow_run_ids:
            parameters = prefect.read_flow_run(run_id).parameters
            clean(f"parameters of flow run {run_id}", json.dumps(parameters, default=str))
    assert logs, "the runs logged nothing to Prefect?"
    clean("the Prefect logs", "\n".join(log.message for log in logs))
    # Nor did the services print one to their logs.
    for log in (service_stack.state_dir / "logs").glob("*.log"):
        clean(f"service log {log.name}", log.read_text(errors="replace"))


def test_failed_training_run_fails_its_parent_with_the_reason(applied, service_workers):
    """A training child with a bad model name in its parameters: the parent flow fails and
    says which child and why (run_deployment alone would let the parent succeed)."""
    from prefect import flow

    from fmnist.flows.dispatch import run_all
    from fmnist.flows.pipeline import TrainingRunsFailed

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
            timeout=600,
        )
        if failures:
            raise TrainingRunsFailed("; ".join(f"{m}: {why}" for m, why in failures.items()))

    state = parent(return_state=True)
    assert state.is_failed()
    assert "resnet: Failed" in state.message
    assert "unknown model 'resnet'" in state.message
