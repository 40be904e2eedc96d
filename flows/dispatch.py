"""Fan training out to a deployment and wait for every flow run: Prefect's run_deployment
does not fail the caller when a child fails, so this module does, naming each failure.

The waiting (poll, count failures, cancel at the timeout) is a plain function over a
RunStates reader, so it is tested with fake states; PrefectRunStates is the real reader.
Runs still scheduled after a minute get one line saying why: no live worker on their pool
(a warning), or queued behind the pool's concurrency limit (information: that is the limit
doing its job), or neither (a warning with what the server says).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

WAITING_HINT_S = 60.0
# A worker counts as alive while its last heartbeat is at most this many of its heartbeat
# intervals old (Prefect's workers beat every 30 s by default).
LIVE_HEARTBEATS = 3


@dataclass(frozen=True)
class PoolStatus:
    """What the server says of the work pool a waiting run is queued on."""

    pool: str
    live_workers: int  # workers of the pool with a recent heartbeat
    running: int  # the pool's flow runs pending or running now
    limit: int | None  # the pool's concurrency limit (None: no limit)


def waiting_hint(names: list[str], waited: float, pool: PoolStatus | None) -> tuple[str, int, str]:
    """(reason, log level, message) for runs still scheduled after `waited` seconds."""
    runs = ", ".join(names)
    if pool is None:
        return (
            "unknown",
            logging.WARNING,
            f"no worker has picked up {runs} after {waited:.0f} s: is a worker running for "
            "its work pool (prefect worker start --pool ...)?",
        )
    if pool.live_workers == 0:
        return (
            "no-worker",
            logging.WARNING,
            f"no worker has picked up {runs} after {waited:.0f} s: no worker of work pool "
            f"{pool.pool!r} has sent a heartbeat lately (prefect worker start --pool {pool.pool})",
        )
    if pool.limit is not None and pool.running >= pool.limit:
        return (
            "limit",
            logging.INFO,
            f"{runs} queued behind work pool {pool.pool!r}'s concurrency limit "
            f"({pool.running} running, limit {pool.limit})",
        )
    limit = "no limit" if pool.limit is None else f"limit {pool.limit}"
    return (
        "stuck",
        logging.WARNING,
        f"{runs} not picked up after {waited:.0f} s although work pool {pool.pool!r} has "
        f"{pool.live_workers} live worker(s) and {pool.running} run(s) going ({limit}): is "
        "the pool or its queue paused?",
    )


class RunState(Protocol):
    """The part of a flow run's state that the waiting reads (Prefect's State has it)."""

    name: str
    message: str | None

    def is_final(self) -> bool: ...
    def is_completed(self) -> bool: ...
    def is_scheduled(self) -> bool: ...


class RunStates(Protocol):
    """Reads the state of a flow run by id, cancels a run, says what its pool is doing."""

    def read(self, run_id: Any) -> RunState | None: ...
    def cancel(self, run_id: Any) -> None: ...
    def pool_status(self, run_id: Any) -> PoolStatus | None: ...


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

    def pool_status(self, run_id: Any) -> PoolStatus | None:
        """The run's work pool: live workers, runs going, limit (None: no pool, or unknown)."""
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
            WorkPoolFilter,
            WorkPoolFilterName,
        )
        from prefect.client.schemas.objects import StateType

        name = self.client.read_flow_run(run_id).work_pool_name
        if not name:
            return None
        pool = self.client.read_work_pool(name)
        now = datetime.now(UTC)
        live = 0
        for worker in self.client.read_workers_for_work_pool(name):
            beat, every = worker.last_heartbeat_time, worker.heartbeat_interval_seconds or 30
            if beat is not None and (now - beat).total_seconds() <= LIVE_HEARTBEATS * every:
                live += 1
        going = FlowRunFilterStateType(any_=[StateType.PENDING, StateType.RUNNING])
        running = self.client.count_flow_runs(
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=going)),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[name])),
        )
        return PoolStatus(name, live, running, pool.concurrency_limit)


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
    Runs all still scheduled after WAITING_HINT_S get a line saying why (waiting_hint),
    again only when the reason changes.
    """
    logger = logger or logging.getLogger(__name__)
    failures: dict[str, str] = {}
    pending = dict(runs)
    started = clock()
    hinted = None  # the reason last given for the waiting
    while pending:
        waiting = []  # this poll's states of the runs still pending
        for name, run_id in list(pending.items()):
            state = states.read(run_id)
            if state is None or not state.is_final():
                waiting.append(state)
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
        if waited > WAITING_HINT_S and all(s is not None and s.is_scheduled() for s in waiting):
            try:
                pool = states.pool_status(next(iter(pending.values())))
            except Exception:  # only a hint: a server that cannot say leaves it vaguer
                pool = None
            reason, level, message = waiting_hint(list(pending), waited, pool)
            if reason != hinted:
                logger.log(level, "%s", message)
                hinted = reason
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
        states = PrefectRunStates(client)
        try:
            return wait_for_runs(
                runs, states, poll_interval=poll_interval, timeout=timeout, logger=logger
            )
        except BaseException:
            # The pipeline stops waiting (an error, Ctrl-C, SIGTERM): its queued training
            # runs would otherwise still run later, for a parent that is gone.
            cancel_unfinished(runs, states)
            raise


def cancel_unfinished(runs: dict[str, Any], states: RunStates) -> list[str]:
    """Cancel the runs that are not final yet; the names of those cancelled."""
    cancelled = []
    for name, run_id in runs.items():
        with contextlib.suppress(Exception):  # best effort: the API may be what failed
            state = states.read(run_id)
            if state is None or not state.is_final():
                states.cancel(run_id)
                cancelled.append(name)
    return cancelled
