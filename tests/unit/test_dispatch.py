"""Waiting for the training runs (flows/dispatch.py) over fake run states: no server.

The fake is of our own reader (RunStates); the states it returns are Prefect's real State
objects, so "final", "completed" and "scheduled" mean what they mean for Prefect.
"""

from __future__ import annotations

import logging

import pytest
from prefect.states import Cancelled, Completed, Crashed, Failed, Pending, Running, Scheduled

from fmnist.flows.dispatch import (
    WAITING_HINT_S,
    PoolStatus,
    cancel_unfinished,
    wait_for_runs,
    waiting_hint,
)

LOGGER = wait_for_runs.__module__  # the module's logger: its __name__ (make mutate renames it)


class FakeRuns:
    """Each run id plays a script of states, one per read; the last one repeats. Their work
    pool's status, as the server would give it, plays a script too (None: unknown)."""

    def __init__(self, scripts: dict[str, list], pools: list | None = None) -> None:
        self.scripts = {k: list(v) for k, v in scripts.items()}
        self.reads: dict[str, int] = dict.fromkeys(scripts, 0)
        self.cancelled: list[str] = []
        self.pools = list(pools or [None])

    def read(self, run_id: str):
        script = self.scripts[run_id]
        self.reads[run_id] += 1
        return script.pop(0) if len(script) > 1 else script[0]

    def cancel(self, run_id: str) -> None:
        self.cancelled.append(run_id)

    def pool_status(self, run_id: str):
        pool = self.pools.pop(0) if len(self.pools) > 1 else self.pools[0]
        if isinstance(pool, Exception):
            raise pool
        return pool


class FakeClock:
    """A clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def wait(runs: FakeRuns, clock: FakeClock | None = None, **kwargs) -> dict[str, str]:
    clock = clock or FakeClock()
    ids = {name: name for name in runs.scripts}
    return wait_for_runs(ids, runs, clock=clock, sleep=clock.sleep, **kwargs)


def test_all_completed_is_no_failure_and_no_cancel():
    runs = FakeRuns({"a": [Completed()], "b": [Running(), Completed()]})
    assert wait(runs) == {}
    assert runs.cancelled == []


def test_a_failed_child_fails_the_parent_with_its_state_and_message():
    runs = FakeRuns(
        {
            "ok": [Completed()],
            "bad": [Running(), Failed(message="loss is NaN")],
            "gone": [Crashed(message="")],
            "stopped": [Cancelled(message="by hand")],
        }
    )
    failures = wait(runs)
    assert set(failures) == {"bad", "gone", "stopped"}
    assert failures["bad"] == "Failed: loss is NaN"
    assert failures["gone"] == "Crashed: no message"
    assert failures["stopped"].startswith("Cancelled: by hand")


def test_waits_while_runs_are_pending_and_sleeps_the_poll_interval():
    runs = FakeRuns({"a": [Scheduled(), Pending(), Running(), Running(), Completed()]})
    clock = FakeClock()
    assert wait(runs, clock, poll_interval=7.5) == {}
    assert runs.reads["a"] == 5  # one read per poll, until final
    assert clock.sleeps == [7.5] * 4


def test_a_run_without_a_state_yet_is_waited_for():
    runs = FakeRuns({"a": [None, None, Completed()]})
    assert wait(runs) == {}
    assert runs.reads["a"] == 3


def test_a_final_run_is_not_read_again():
    runs = FakeRuns({"done": [Completed()], "slow": [Running()] * 3 + [Completed()]})
    assert wait(runs) == {}
    assert runs.reads == {"done": 1, "slow": 4}


def test_a_run_that_never_ends_is_cancelled_at_the_timeout():
    runs = FakeRuns({"stuck": [Running()], "ok": [Running(), Completed()]})
    clock = FakeClock()
    failures = wait(runs, clock, poll_interval=10, timeout=40)
    assert runs.cancelled == ["stuck"]
    assert failures == {"stuck": "TimedOut: not finished after 40 s; cancelled"}
    # Gave up at the first poll past the timeout (40 s is not past it), not later.
    assert sum(clock.sleeps) == 50


def test_no_timeout_means_waiting_as_long_as_it_takes():
    runs = FakeRuns({"slow": [Running()] * 200 + [Completed()]})
    clock = FakeClock()
    assert wait(runs, clock, poll_interval=60, timeout=None) == {}
    assert runs.cancelled == []
    assert sum(clock.sleeps) >= 100 * 60


def test_timeout_is_not_reached_by_runs_that_finish_in_time():
    runs = FakeRuns({"a": [Running()] * 4 + [Failed(message="x")]})
    clock = FakeClock()
    failures = wait(runs, clock, poll_interval=10, timeout=40)
    assert runs.cancelled == []
    assert failures == {"a": "Failed: x"}


def test_hint_when_no_worker_picks_the_runs_up(caplog: pytest.LogCaptureFixture):
    polls = int(WAITING_HINT_S // 10) + 3
    runs = FakeRuns({"a": [Scheduled()] * polls + [Completed()]})
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert wait(runs, poll_interval=10) == {}
    hints = [r for r in caplog.records if "no worker has picked up a" in r.getMessage()]
    assert len(hints) == 1  # said once, not at every poll
    assert hints[0].levelno == logging.WARNING


class TimedRuns(FakeRuns):
    """Each run's state follows the fake clock: (until this many seconds, state) steps."""

    def __init__(self, clock: FakeClock, timelines: dict[str, list]) -> None:
        super().__init__({name: [steps[-1][1]] for name, steps in timelines.items()})
        self.clock, self.start, self.timelines = clock, clock.now, timelines

    def read(self, run_id: str):
        self.reads[run_id] += 1
        elapsed = self.clock.now - self.start
        return next(state for until, state in self.timelines[run_id] if elapsed < until)


def test_no_hint_at_exactly_the_waiting_hint_time(caplog: pytest.LogCaptureFixture):
    # Polls at 0, 10, ... 60 s see the run scheduled; at 70 s it has completed. 60 s is not
    # past the hint time, so nothing is said.
    clock = FakeClock()
    runs = TimedRuns(clock, {"a": [(WAITING_HINT_S + 5, Scheduled()), (1e9, Completed())]})
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert wait(runs, clock, poll_interval=10) == {}
    assert not [r for r in caplog.records if "no worker" in r.getMessage()]
    assert sum(clock.sleeps) == WAITING_HINT_S + 10


def test_no_hint_once_a_worker_runs_one_of_them(caplog: pytest.LogCaptureFixture):
    polls = int(WAITING_HINT_S // 10) + 3
    runs = FakeRuns(
        {"a": [Scheduled()] * polls + [Completed()], "b": [Running()] * polls + [Completed()]}
    )
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert wait(runs, poll_interval=10) == {}
    assert not [r for r in caplog.records if "no worker" in r.getMessage()]


def test_outcomes_are_logged(caplog: pytest.LogCaptureFixture):
    runs = FakeRuns({"good": [Completed()], "bad": [Failed(message="boom")]})
    with caplog.at_level(logging.INFO, logger=LOGGER):
        wait(runs)
    by_level = {(r.levelno, r.getMessage()) for r in caplog.records}
    assert (logging.INFO, "good: training run completed") in by_level
    assert (logging.ERROR, "bad: training run Failed: boom") in by_level


def test_the_default_poll_interval_is_five_seconds():
    runs = FakeRuns({"a": [Running(), Completed()]})
    clock = FakeClock()
    ids = {"a": "a"}
    assert wait_for_runs(ids, runs, clock=clock, sleep=clock.sleep) == {}
    assert clock.sleeps == [5.0]


# -- why the runs wait (issue 18, item 8) ---------------------------------------------------

GPU_AT_LIMIT = PoolStatus("gpu", live_workers=1, running=2, limit=2)
GPU_NO_WORKER = PoolStatus("gpu", live_workers=0, running=0, limit=2)


def hints(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if "training run" not in r.msg]


def test_runs_queued_behind_the_pools_limit_are_no_worker_warning(caplog):
    polls = int(WAITING_HINT_S // 10) + 3
    runs = FakeRuns({"c": [Scheduled()] * polls + [Completed()]}, pools=[GPU_AT_LIMIT])
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert wait(runs, poll_interval=10) == {}
    assert hints(caplog) == [
        (logging.INFO, "c queued behind work pool 'gpu''s concurrency limit (2 running, limit 2)")
    ]


def test_no_live_worker_of_the_pool_is_a_warning_naming_it(caplog):
    polls = int(WAITING_HINT_S // 10) + 3
    runs = FakeRuns({"a": [Scheduled()] * polls + [Completed()]}, pools=[GPU_NO_WORKER])
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert wait(runs, poll_interval=10) == {}
    [(level, message)] = hints(caplog)
    assert level == logging.WARNING
    assert message.startswith("no worker has picked up a after 70 s: no worker of work pool 'gpu'")
    assert "prefect worker start --pool gpu" in message


def test_a_new_reason_is_said_once_more(caplog):
    # Queued behind the limit for a while, then the pool's last worker dies.
    polls = int(WAITING_HINT_S // 10) + 6
    pools = [GPU_AT_LIMIT] * 3 + [GPU_NO_WORKER]
    runs = FakeRuns({"a": [Scheduled()] * polls + [Completed()]}, pools=pools)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert wait(runs, poll_interval=10) == {}
    said = hints(caplog)
    assert [level for level, _ in said] == [logging.INFO, logging.WARNING]
    assert "concurrency limit" in said[0][1] and "no worker of work pool" in said[1][1]


def test_a_pool_that_cannot_say_gives_the_general_hint(caplog):
    polls = int(WAITING_HINT_S // 10) + 3
    runs = FakeRuns({"a": [Scheduled()] * polls + [Completed()]}, pools=[OSError("refused")])
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert wait(runs, poll_interval=10) == {}
    [(level, message)] = hints(caplog)
    assert level == logging.WARNING
    assert "no worker has picked up a after 70 s: is a worker running" in message


@pytest.mark.parametrize(
    ("pool", "reason", "level", "says"),
    [
        (None, "unknown", logging.WARNING, "is a worker running for its work pool"),
        (GPU_NO_WORKER, "no-worker", logging.WARNING, "no worker of work pool 'gpu' has sent"),
        (GPU_AT_LIMIT, "limit", logging.INFO, "a, b queued behind work pool 'gpu''s concurrency"),
        (
            PoolStatus("gpu", live_workers=2, running=1, limit=2),
            "stuck",
            logging.WARNING,
            "has 2 live worker(s) and 1 run(s) going (limit 2): is the pool or its queue paused",
        ),
        (
            PoolStatus("cpu", live_workers=1, running=5, limit=None),
            "stuck",
            logging.WARNING,
            "and 5 run(s) going (no limit)",
        ),
    ],
)
def test_waiting_hint(pool, reason, level, says):
    got_reason, got_level, message = waiting_hint(["a", "b"], 61.4, pool)
    assert (got_reason, got_level) == (reason, level)
    assert says in message
    if reason != "limit":
        assert "after 61 s" in message


def test_a_pipeline_that_stops_waiting_cancels_what_has_not_ended():
    runs = FakeRuns({"a": [Completed()], "b": [Scheduled()], "c": [Running()]})
    assert cancel_unfinished({n: n for n in runs.scripts}, runs) == ["b", "c"]
    assert runs.cancelled == ["b", "c"]  # the finished one is left as it is
