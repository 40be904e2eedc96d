"""Every test has a time limit (tests/timeouts.py on pytest-timeout): the default for a fast
test, its family's for a slow one, its own where it sets one, the command line's over all.
Nothing here hangs or sleeps: the limits are read, not reached."""

from __future__ import annotations

import pytest

from tests.timeouts import FAMILY_TIMEOUT_S, family_timeout

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
