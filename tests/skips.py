"""Skips for a missing dependency: locally a skip that names the install command, in CI
(CI=true) a failure, so that a partial install cannot pass by skipping a whole tier.

A skip is "for a missing dependency" when its reason comes from missing(): it starts with
MISSING_DEPENDENCY. Other skips (a platform, a deliberate opt-out) stay skips everywhere.
"""

from __future__ import annotations

import os

import pytest

MISSING_DEPENDENCY = "missing dependency"


def missing(what: str, install: str | None = None) -> str:
    """The skip reason for a dependency that is not there, with the command that installs it."""
    return f"{MISSING_DEPENDENCY}: {what}" + (f" (install: {install})" if install else "")


def in_ci() -> bool:
    """Whether the suite runs in CI (CI set to true, as CI services and .ci/run's caller do)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """In CI, turn a skip for a missing dependency into a failure that keeps the reason."""
    report: pytest.TestReport = yield
    if report.skipped and not hasattr(report, "wasxfail") and in_ci():
        reason = _skip_reason(report)
        if reason.startswith(MISSING_DEPENDENCY):
            report.outcome = "failed"
            report.longrepr = f"CI=true and a test was skipped for a {reason}"
    return report
