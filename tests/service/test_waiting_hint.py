"""Why training runs wait, as the pipeline says it (issue 18, item 8), read from the real
Prefect server: runs queued behind a work pool's concurrency limit are information, not a
"no worker" warning; a pool whose workers are gone is a warning that names it.

A work pool of this test's own, a worker that exists for the server only through its
heartbeat, and a fake clock for wait_for_runs (no minute of real waiting): the states,
workers and counts are the server's.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from fmnist.flows.dispatch import PrefectRunStates, wait_for_runs
from tests.service_fixtures import ServiceStack

pytestmark = pytest.mark.service


class Clock:
    """Moves only when wait_for_runs sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def pool(service_stack: ServiceStack) -> Iterator[tuple[Any, str, Any]]:
    """(client, pool name, deployment id): a process pool limited to one run at a time,
    with no worker process polling it; removed afterwards."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    name = f"hint-{uuid.uuid4().hex[:8]}"
    with service_stack.prefect_settings(), get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=name, type="process", concurrency_limit=1))
        try:
            flow_id = client.create_flow_from_name(name)
            deployment_id = client.create_deployment(
                flow_id=flow_id, name=name, work_pool_name=name, entrypoint="nowhere.py:none"
            )
            yield client, name, deployment_id
        finally:
            client.delete_work_pool(name)


def _wait(client: Any, run_id: Any, caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    """wait_for_runs over the real server for 90 s of fake time; the lines it logged."""
    caplog.clear()
    clock = Clock()
    with caplog.at_level(logging.INFO, logger="fmnist.flows.dispatch"):
        failures = wait_for_runs(
            {"vgg": run_id},
            PrefectRunStates(client),
            poll_interval=10,
            timeout=90,
            clock=clock,
            sleep=clock.sleep,
        )
    assert failures == {"vgg": "TimedOut: not finished after 90 s; cancelled"}
    return [
        (r.levelno, r.getMessage()) for r in caplog.records if r.name == "fmnist.flows.dispatch"
    ]


def test_queued_behind_the_limit_is_no_missing_worker(pool, caplog) -> None:
    from prefect.states import Running

    client, name, deployment_id = pool
    # No worker has ever sent a heartbeat: that is the reason, and it is a warning.
    lonely = client.create_flow_run_from_deployment(deployment_id)
    said = _wait(client, lonely.id, caplog)
    assert [level for level, _ in said] == [logging.WARNING]
    assert f"no worker of work pool {name!r} has sent a heartbeat lately" in said[0][1]

    # A live worker (its heartbeat) and one run of the pool running: the limit of 1 is
    # reached, so the next run is queued behind it, which is information only.
    client.send_worker_heartbeat(name, "hint-worker", heartbeat_interval_seconds=30)
    first = client.create_flow_run_from_deployment(deployment_id)
    client.set_flow_run_state(first.id, Running(), force=True)
    queued = client.create_flow_run_from_deployment(deployment_id)
    said = _wait(client, queued.id, caplog)
    assert said == [
        (
            logging.INFO,
            f"vgg queued behind work pool {name!r}'s concurrency limit (1 running, limit 1)",
        )
    ]
    assert not [m for _, m in said if "no worker" in m]
