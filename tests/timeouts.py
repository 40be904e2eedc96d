"""A time limit on every test (pytest-timeout), so that a test that hangs fails, named,
instead of hanging the suite.

The default (`timeout` in pyproject.toml, 300 s) covers the fast tests; a test of a slower
family gets its family's limit (the largest of its markers', FAMILY_TIMEOUT_S) unless it
sets its own with @pytest.mark.timeout. Setup and teardown count: a session fixture (the
service stack, Prefect's test harness) is started in its first test's setup.

The limit fires as SIGALRM in the main thread (`timeout_method = "signal"`): the test fails
with "Timeout (>N s)" and the session goes on. A signal cannot stop a main thread stuck
inside C code, so a watchdog thread waits BACKSTOP_S longer, then names the test, dumps
every thread's stack and ends the session (pytest-timeout's thread method).

`pytest --timeout=N` on the command line sets N for every test (0: no limit), families too.
"""

from __future__ import annotations

import sys
import threading

import pytest

# Generous: several times what each family takes on a busy 2-core machine.
FAMILY_TIMEOUT_S = {
    "e2e": 1800,  # the real flow into a temporary store, minutes per test
    "faults": 1800,  # real `fmnist run` processes killed and resumed
    "service": 1800,  # the first one starts PostgreSQL, Prefect, MLflow and the workers
    "browser": 1200,
    "serving": 1200,
    "bench": 900,
    "remote": 2400,  # a stack, a second host, the smoke pipeline and four refusals in setup
}
BACKSTOP_S = 60


def family_timeout(markers: set[str]) -> int | None:
    """The limit a test of these markers gets: its slowest family's (None: the default)."""
    limits = [FAMILY_TIMEOUT_S[m] for m in markers if m in FAMILY_TIMEOUT_S]
    return max(limits) if limits else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give each test of a slow family its family's limit, unless it has its own or the
    command line set one for all."""
    if config.getoption("timeout", None) is not None:
        return
    for item in items:
        if item.get_closest_marker("timeout") is not None:
            continue
        limit = family_timeout({m.name for m in item.iter_markers()})
        if limit is not None:
            item.add_marker(pytest.mark.timeout(limit))


def pytest_timeout_set_timer(item: pytest.Item, settings) -> None:
    """Start the watchdog beside pytest-timeout's signal (returns None: pytest-timeout's own
    hook then sets its timer as usual)."""
    if settings.method != "signal" or not settings.timeout:
        return

    def backstop() -> None:
        from pytest_timeout import timeout_timer

        sys.stderr.write(
            f"\n{item.nodeid}: still running {BACKSTOP_S} s after its {settings.timeout} s "
            "timeout (the signal could not interrupt it): ending the session\n"
        )
        timeout_timer(item, settings)  # dumps the stacks, then os._exit(1)

    timer = threading.Timer(settings.timeout + BACKSTOP_S, backstop)
    timer.daemon = True
    timer.name = f"timeout backstop {item.nodeid}"
    item.stash[_BACKSTOP] = timer
    timer.start()


def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    """Stop the watchdog (returns None: pytest-timeout then cancels its own timer)."""
    timer = item.stash.get(_BACKSTOP, None)
    if timer is not None:
        timer.cancel()


_BACKSTOP = pytest.StashKey[threading.Timer]()
