"""Fan training out to a deployment and wait for every flow run: Prefect's run_deployment
does not fail the caller when a child fails, so this module does, naming each failure.

The waiting (poll, count failures, cancel at the timeout) is a plain function over a
RunStates reader, so it is tested with fake states; PrefectRunStates is the real reader.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

WAITING_HINT_S = 60.0


class RunState(Protocol):
    """The part of a flow run's state that the waiting reads (Prefect's State has it)."""

    name: str
    message: str | None

    def is_final(self) -> bool: ...
    def is_completed(self) -> bool: ...
    def is_scheduled(self) -> bool: ...


class RunStates(Protocol):
    """Reads the state of a flow run by id, and cancels a run."""

    def read(self, run_id: Any) -> RunState | None: ...
    def cancel(self, run_id: Any) -> None: ...


class PrefectRunStates:
    """RunStates over a Prefect client (the API the flow runs live on)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def read(self, run_id: Any) -> RunState | None:
        """The flow run's current state (None before it has one)."""
        return self.client.read_flow_run(run_id).state

    def cancel(self, run_id: Any) -> None:
        """Ask the run's worker to stop it."""
        from prefect.states import Cancelling

        state = Cancelling(message="the pipeline stopped waiting for this run")
        self.client.set_flow_run_state(run_id, state, force=True)


def wait_for_runs(
    runs: dict[str, Any],
    states: RunStates,
    *,
    poll_interval: float = 5.0,
    timeout: float | None = None,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, str]:
    """Poll name -> run id until every run is final; return name -> failure.

    A run that ends in any state but COMPLETED is a failure, reported with its state name
    and message. Runs still pending after `timeout` seconds are cancelled and reported.
    """
    logger = logger or logging.getLogger(__name__)
    failures: dict[str, str] = {}
    pending = dict(runs)
    started = clock()
    hinted = False
    while pending:
        for name, run_id in list(pending.items()):
            state = states.read(run_id)
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
        waited = clock() - started
        if timeout is not None and waited > timeout:
            for name, run_id in pending.items():
                states.cancel(run_id)
                failures[name] = f"TimedOut: not finished after {timeout:.0f} s; cancelled"
            break
        if not hinted and waited > WAITING_HINT_S:
            now = [states.read(r) for r in pending.values()]
            if all(s is not None and s.is_scheduled() for s in now):
                logger.warning(
                    "no worker has picked up %s after %.0f s: is a worker running "
                    "for its work pool (prefect worker start --pool ...)?",
                    ", ".join(pending),
                    waited,
                )
                hinted = True
        sleep(poll_interval)
    return failures


def run_all(
    deployment: str,
    requests: dict[str, dict[str, Any]],
    *,
    poll_interval: float,
    timeout: float | None,
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

    with get_client(sync_client=True) as client:
        return wait_for_runs(
            runs,
            PrefectRunStates(client),
            poll_interval=poll_interval,
            timeout=timeout,
            logger=logger,
        )
