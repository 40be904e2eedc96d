"""A skip for a missing dependency: a skip locally, a failure in CI (tests/skips.py)."""

from __future__ import annotations

import pytest

from tests.skips import MISSING_DEPENDENCY, in_ci, missing

SUITE = f"""
import pytest

def test_needs_a_tool():
    pytest.skip({missing("the frobnicator", "apt-get install frobnicator")!r})

@pytest.fixture
def tool():
    pytest.skip({missing("a server")!r})

def test_needs_a_fixture(tool):
    pass

def test_opted_out():
    pytest.skip("not on this platform")

@pytest.mark.xfail(reason="known bug")
def test_known_bug():
    assert False

def test_fine():
    pass
"""


def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    pytester.makepyfile(test_suite=SUITE)
    return pytester.runpytest_inprocess("-p", "tests.skips", "-rA")


def test_reason_names_the_dependency_and_the_install_command():
    reason = missing("the frobnicator", "apt-get install frobnicator")
    assert reason.startswith(MISSING_DEPENDENCY)
    assert "the frobnicator" in reason and "apt-get install frobnicator" in reason


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_locally_a_missing_dependency_is_a_skip(pytester, monkeypatch, ci):
    result = run(pytester, monkeypatch, ci)
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)
    result.stdout.fnmatch_lines(["*apt-get install frobnicator*"])


@pytest.mark.parametrize("ci", ["true", "TRUE", "1", "yes"])
def test_in_ci_a_missing_dependency_fails_the_run(pytester, monkeypatch, ci):
    result = run(pytester, monkeypatch, ci)
    # The call-time skip fails; the fixture-time one is an error; the rest are untouched.
    result.assert_outcomes(passed=1, failed=1, errors=1, skipped=1, xfailed=1)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*skipped for a missing dependency: the frobnicator*"])


def test_in_ci_reads_the_ci_variable(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert in_ci()
    monkeypatch.setenv("CI", "false")
    assert not in_ci()
