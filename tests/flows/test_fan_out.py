"""Fan-out through Prefect's own API (flows/dispatch.run_all): Prefect's test harness, a
deployment with no worker, and a stand-in worker thread that moves the children's states.

No training and no MLflow: what is under test is that each request becomes a flow run of the
deployment, linked to the calling flow run, and that the children's final states decide the
parent's result (a failed child is a failure named with its state and message; a child that
never ends is cancelled at the timeout).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.states import Completed, Failed, Running

from fmnist.flows.dispatch import PrefectRunStates, run_all

pytestmark = pytest.mark.e2e


@flow(name="dispatch-child")
def child(outcome: str = "complete", message: str = "") -> str:
    """What the deployment would run (never run here: the stand-in worker sets states)."""
    return outcome


@pytest.fixture
def deployment(harness, request) -> tuple[str, Any]:
    """A fresh deployment of `child` (no work pool, no worker): its name and id."""
    name = request.node.name.replace("[", "-").replace("]", "")
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow(child)
        deployment_id = client.create_deployment(flow_id=flow_id, name=name)
    return f"dispatch-child/{name}", deployment_id


def children(deployment_id: Any) -> list[Any]:
    """The flow runs of one deployment."""
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )


class StandInWorker(threading.Thread):
    """Plays each child's outcome (its parameters say which) once `expected` runs exist."""

    def __init__(self, deployment_id: Any, expected: int) -> None:
        super().__init__(daemon=True)
        self.deployment_id = deployment_id
        self.expected = expected
        self.seen_all_before_first_move = False
        self.stop = threading.Event()

    def run(self) -> None:
        """Wait until every run is created, then finish each as its parameters say."""
        deadline = time.monotonic() + 120
        while not self.stop.is_set() and time.monotonic() < deadline:
            runs = children(self.deployment_id)
            if len(runs) == self.expected:
                break
            time.sleep(0.2)
        else:
            return
        self.seen_all_before_first_move = True
        with get_client(sync_client=True) as client:
            for run in runs:
                client.set_flow_run_state(run.id, Running())
                if run.parameters.get("outcome") == "fail":
                    state = Failed(message=run.parameters.get("message") or None)
                else:
                    state = Completed()
                client.set_flow_run_state(run.id, state, force=True)


@flow(name="dispatch-parent")
def parent(deployment: str, requests: dict[str, dict[str, Any]], timeout: float | None) -> dict:
    """The caller: run_all needs a flow run (its logger, the subflow link)."""
    return run_all(deployment, requests, poll_interval=0.2, timeout=timeout)


def test_each_request_is_a_child_run_and_a_failed_child_is_named(deployment):
    name, deployment_id = deployment
    requests = {
        "good": {"outcome": "complete"},
        "bad": {"outcome": "fail", "message": "loss is NaN"},
        "also_good": {"outcome": "complete", "message": "x"},
    }
    worker = StandInWorker(deployment_id, expected=len(requests))
    worker.start()
    try:
        failures = parent(name, requests, timeout=120)
    finally:
        worker.stop.set()
        worker.join(10)

    assert failures == {"bad": "Failed: loss is NaN"}
    runs = children(deployment_id)
    assert sorted(r.parameters["outcome"] for r in runs) == ["complete", "complete", "fail"]
    assert {tuple(sorted(r.parameters.items())) for r in runs} == {
        tuple(sorted(p.items())) for p in requests.values()
    }
    # Linked to the calling flow run: each child hangs off a task run of the parent.
    assert all(r.parent_task_run_id is not None for r in runs)
    with get_client(sync_client=True) as client:
        parents = {client.read_task_run(r.parent_task_run_id).flow_run_id for r in runs}
    assert len(parents) == 1
    assert worker.seen_all_before_first_move


def test_a_failed_child_without_a_message_says_so(deployment):
    name, deployment_id = deployment
    worker = StandInWorker(deployment_id, expected=1)
    worker.start()
    try:
        failures = parent(name, {"only": {"outcome": "fail"}}, timeout=120)
    finally:
        worker.stop.set()
        worker.join(10)
    assert failures == {"only": "Failed: no message"}


def test_children_nobody_runs_are_cancelled_at_the_timeout(deployment):
    name, deployment_id = deployment
    started = time.monotonic()
    failures = parent(name, {"a": {}, "b": {}}, timeout=1)
    waited = time.monotonic() - started

    assert failures == {
        "a": "TimedOut: not finished after 1 s; cancelled",
        "b": "TimedOut: not finished after 1 s; cancelled",
    }
    assert waited < 60
    runs = children(deployment_id)
    assert len(runs) == 2
    # Never picked up by a worker: Prefect's server turns the request to cancel straight
    # into Cancelled (a running child would be Cancelling until its worker stops it).
    assert {r.state.name for r in runs} == {"Cancelled"}


def test_the_reader_gives_the_current_state_and_cancels(deployment):
    _, deployment_id = deployment
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployment_id)
        states = PrefectRunStates(client)
        assert states.read(run.id).is_scheduled()
        client.set_flow_run_state(run.id, Running())
        assert states.read(run.id).name == "Running"
        states.cancel(run.id)
        state = states.read(run.id)
    assert state.name == "Cancelling"
    assert state.message == "the pipeline stopped waiting for this run"
