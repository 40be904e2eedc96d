"""Waiting for the training runs (flows/dispatch.py) over fake run states: no server.

The fake is of our own reader (RunStates); the states it returns are Prefect's real State
objects, so "final", "completed" and "scheduled" mean what they mean for Prefect.
"""

from __future__ import annotations

import logging

import pytest
from prefect.states import Cancelled, Completed, Crashed, Failed, Pending, Running, Scheduled

from fmnist.flows.dispatch import WAITING_HINT_S, wait_for_runs

LOGGER = wait_for_runs.__module__  # the module's logger: its __name__ (make mutate renames it)


class FakeRuns:
    """Each run id plays a script of states, one per read; the last one repeats."""

    def __init__(self, scripts: dict[str, list]) -> None:
        self.scripts = {k: list(v) for k, v in scripts.items()}
        self.reads: dict[str, int] = dict.fromkeys(scripts, 0)
        self.cancelled: list[str] = []

    def read(self, run_id: str):
        script = self.scripts[run_id]
        self.reads[run_id] += 1
        return script.pop(0) if len(script) > 1 else script[0]

    def cancel(self, run_id: str) -> None:
        self.cancelled.append(run_id)


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
