"""Every test has a time limit (tests/timeouts.py on pytest-timeout): the default for a fast
test, its family's for a slow one, its own where it sets one, the command line's over all.
The limits are read, not reached, except once: a test that would loop for ever, stopped
after a second."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.timeouts import FAMILY_TIMEOUT_S, family_timeout

REPO_ROOT = Path(__file__).resolve().parents[2]

SUITE = """
import pytest
from pytest_timeout import _get_item_settings

def limit(request):
    settings = _get_item_settings(request.node)
    return settings.timeout, settings.method

def test_fast(request):
    assert limit(request) == (300, "signal")

@pytest.mark.e2e
def test_e2e(request):
    assert limit(request) == (1800, "signal")

@pytest.mark.bench
@pytest.mark.serving
def test_two_families_take_the_larger(request):
    assert limit(request) == (1200, "signal")

@pytest.mark.http
def test_a_fast_family(request):
    assert limit(request) == (300, "signal")

@pytest.mark.e2e
@pytest.mark.timeout(42)
def test_own_limit(request):
    assert limit(request)[0] == 42
"""

INI = """
[pytest]
timeout = 300
timeout_method = signal
markers =
    e2e: e2e
    bench: bench
    serving: serving
    http: http
"""


def test_each_test_gets_its_familys_limit_or_its_own(pytester: pytest.Pytester):
    pytester.makeini(INI)
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_inprocess("-p", "tests.timeouts", "--strict-markers")
    result.assert_outcomes(passed=5)


def test_the_command_line_sets_the_limit_of_every_test(pytester: pytest.Pytester):
    pytester.makeini(INI)
    pytester.makepyfile(
        test_suite="""
import pytest
from pytest_timeout import _get_item_settings

@pytest.mark.e2e
def test_e2e(request):
    assert _get_item_settings(request.node).timeout == 0
"""
    )
    result = pytester.runpytest_inprocess("-p", "tests.timeouts", "--timeout=0")
    result.assert_outcomes(passed=1)


def test_the_slow_families_have_generous_limits():
    assert family_timeout(set()) is None
    assert family_timeout({"parametrize", "http"}) is None
    assert family_timeout({"service", "browser"}) == 1800
    assert set(FAMILY_TIMEOUT_S) == {
        "e2e",
        "faults",
        "service",
        "browser",
        "serving",
        "bench",
        "remote",
    }
    assert min(FAMILY_TIMEOUT_S.values()) >= 900


def test_this_suite_runs_under_its_configured_limit(request: pytest.FixtureRequest) -> None:
    """The project's own pytest settings (pyproject.toml) give every test a limit, by signal."""
    from pytest_timeout import _get_item_settings

    options = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    ini = options["ini_options"]
    assert ini["timeout"] >= 60 and ini["timeout_method"] == "signal"
    assert request.config.pluginmanager.has_plugin("tests.timeouts")
    settings = _get_item_settings(request.node)
    if request.config.getoption("timeout", None) is None:  # no --timeout on the command line
        assert (settings.timeout, settings.method) == (ini["timeout"], "signal")


def test_a_hanging_test_fails_named_and_the_session_goes_on(pytester: pytest.Pytester) -> None:
    """A test waiting for a timeout that never fires fails with pytest-timeout's message,
    under the project's settings; the next test still runs."""
    options = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    method = options["ini_options"]["timeout_method"]
    pytester.makeini(f"[pytest]\ntimeout_method = {method}\n")
    pytester.makepyfile(
        test_hang="""
import time
import pytest

@pytest.mark.timeout(1)
def test_waits_for_a_timeout_that_never_fires():
    while True:
        time.sleep(0.01)

def test_after_it():
    pass
"""
    )
    result = pytester.runpytest_inprocess("-p", "tests.timeouts")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*Timeout (>1.0s)*", "*FAILED*test_waits_for_a_timeout*"])
