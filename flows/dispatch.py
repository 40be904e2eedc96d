"""Fan training out to a deployment and wait for every flow run: Prefect's run_deployment
does not fail the caller when a child fails, so this module does, naming each failure."""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

WAITING_HINT_S = 60.0


def run_all(
    deployment: str,
    requests: dict[str, dict[str, Any]],
    *,
    poll_interval: float = 5.0,
    timeout: float | None = None,
) -> dict[str, str]:
    """Start one flow run of `deployment` per request, wait for all; return name -> failure.

    All runs are created first (so workers can take them in parallel), each linked to the
    calling flow run as a subflow; then their states are polled until every one is final.
    A run that is not COMPLETED is a failure, reported with its state name and message.
    """
    logger = get_run_logger()
    runs = {}
    for name, parameters in requests.items():
        # timeout=0: create the run and return at once instead of waiting for each in turn.
        flow_run = run_deployment(deployment, parameters=parameters, timeout=0)
        runs[name] = flow_run.id
        logger.info("%s: flow run %s created on %s", name, flow_run.name, deployment)

    failures: dict[str, str] = {}
    pending = dict(runs)
    started = time.monotonic()
    hinted = False
    with get_client(sync_client=True) as client:
        while pending:
            for name, run_id in list(pending.items()):
                state = client.read_flow_run(run_id).state
                if state is None or not state.is_final():
                    continue
                del pending[name]
                if state.is_completed():
                    logger.info("%s: training run completed", name)
                else:
                    failures[name] = f"{state.name}: {state.message or 'no message'}"
                    logger.error("%s: training run %s", name, failures[name])
            if not pending:
                break
            waited = time.monotonic() - started
            if timeout is not None and waited > timeout:
                for name, run_id in pending.items():
                    client.set_flow_run_state(run_id, _cancelling(), force=True)
                    failures[name] = f"TimedOut: not finished after {timeout:.0f} s; cancelled"
                break
            if not hinted and waited > WAITING_HINT_S:
                states = {n: client.read_flow_run(r).state for n, r in pending.items()}
                if all(s is not None and s.is_scheduled() for s in states.values()):
                    logger.warning(
                        "no worker has picked up %s after %.0f s: is a worker running "
                        "for its work pool (prefect worker start --pool ...)?",
                        ", ".join(pending),
                        waited,
                    )
                    hinted = True
            time.sleep(poll_interval)
    return failures


def _cancelling():
    from prefect.states import Cancelling

    return Cancelling(message="the pipeline stopped waiting for this run")
