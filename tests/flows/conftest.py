"""The flows' tests: Prefect's test harness (a temporary API and database), defined once,
started per module (its settings must not outlive the module's tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.standins import harness_on_copy_of, migrated_prefect_db


@pytest.fixture(scope="session")
def migrated_prefect(tmp_path_factory) -> Path:
    """A migrated Prefect database (made once per Prefect version, kept for later sessions):
    the harness's server starts on a copy instead of migrating a new one."""
    return migrated_prefect_db(tmp_path_factory.getbasetemp().parent / "fmnist-migrated-stores")


@pytest.fixture(scope="module")
def harness(tmp_path_factory, migrated_prefect):
    """Prefect's test harness with its own result storage, for one module."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-storage")
    # A busy 2-core machine needs more than the harness's 30 s to start its server.
    with (
        harness_on_copy_of(migrated_prefect),
        prefect_test_harness(server_startup_timeout=180),
        temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}),
    ):
        yield
