"""The stack heals: supervisord restarts a server or worker killed with SIGKILL, and the
restarted one serves again (MLflow's orphaned uvicorn child no longer blocks its port)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.service_fixtures import ServiceStack, status_of

pytestmark = pytest.mark.service

RESTART_S = 15.0  # supervisord notices at once; a few seconds is the target
HEALTHY_S = 240.0  # a restarted server imports and migrates again: slow on 2 busy cores


def _kill_and_wait(service_stack: ServiceStack, name: str, service) -> tuple[float, float]:
    """SIGKILL a program; (seconds until supervisord runs a new process, until it is healthy)."""
    supervisor = service_stack.stack.supervisor
    old = service_stack.pid(name)
    assert old is not None, f"{name} does not run"
    if hasattr(service, "started_at"):
        service.started_at = time.time()  # a worker is healthy with a heartbeat from now on
    killed = time.monotonic()
    os.kill(old, signal.SIGKILL)
    new = None
    while time.monotonic() - killed < RESTART_S:
        info = supervisor.info(name)
        if (
            info
            and info["pid"]
            and info["pid"] != old
            and info["statename"] in ("STARTING", "RUNNING")
        ):
            new = info["pid"]
            break
        time.sleep(0.1)
    restarted = time.monotonic() - killed
    assert new is not None, f"{name} not restarted within {RESTART_S} s: {supervisor.info(name)}"
    while not (supervisor.state(name) == "RUNNING" and service.healthy()):
        assert time.monotonic() - killed < HEALTHY_S, (
            f"{name} restarted (pid {new}) but not healthy after {HEALTHY_S} s:\n"
            + supervisor.tail(name)
        )
        time.sleep(0.5)
    return restarted, time.monotonic() - killed


def test_sigkill_mlflow_server_and_a_worker_then_whole_again(service_stack: ServiceStack) -> None:
    stack = service_stack.stack
    mlflow = stack.mlflow
    worker = next(w for w in stack.workers if w.pool == "gpu")
    for name, service in (("mlflow-server", mlflow), (worker.name, worker)):
        restarted, healthy = _kill_and_wait(service_stack, name, service)
        print(f"{name}: restarted after {restarted:.1f} s, healthy after {healthy:.1f} s")
    # Whole again: every program runs and answers, MLflow still knows its users, their
    # passwords and rights (its auth database survived the kill).
    assert stack.status()
    from mlflow.tracking import MlflowClient

    from fmnist.stack.mlflow_setup import pipeline_names

    experiments, _ = pipeline_names()
    name = sorted(experiments)[0]
    client = MlflowClient(tracking_uri=service_stack.mlflow_url)  # as `pipeline`
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None and experiment.lifecycle_stage == "active"
    run = client.create_run(experiment.experiment_id, run_name="after-healing")
    client.delete_run(run.info.run_id)  # the pipeline's experiment keeps only its own runs
    viewer = f"viewer:{service_stack.secrets.mlflow_viewer_password}"
    api = f"{service_stack.mlflow_url}/api/2.0/mlflow"
    get = f"{api}/experiments/get?experiment_id={experiment.experiment_id}"
    assert status_of(get, auth=viewer) == 200
    assert (
        status_of(f"{api}/runs/create", {"experiment_id": experiment.experiment_id}, auth=viewer)
        == 403
    )
    assert status_of(get, auth="viewer:not-the-password") == 401
