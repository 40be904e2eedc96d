"""The flows' tests: Prefect's test harness (a temporary API and database), defined once,
started per module (its settings must not outlive the module's tests)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """Prefect's test harness with its own result storage, for one module."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-storage")
    # A busy 2-core machine needs more than the harness's 30 s to start its server.
    with (
        prefect_test_harness(server_startup_timeout=180),
        temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}),
    ):
        yield
