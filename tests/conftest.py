"""Shared fixtures: the real Fashion-MNIST files, synthetic IDX files, a local HTTP server."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fmnist.conf import load_config
from fmnist.conf.settings import apply_process_defaults
from fmnist.stages.backend import apply_backend, resolve_backend

# Before anything imports keras or prefect: the same defaults as the `fmnist` command, and
# the same backend (the profile's, unless KERAS_BACKEND says otherwise: CI's JAX leg).
apply_process_defaults()
apply_backend(resolve_backend(load_config("book").keras_backend))

pytest.register_assert_rewrite("tests.skips")
from tests.helpers import LocalServer, TrickleServer  # noqa: E402
from tests.skips import missing  # noqa: E402
from tests.standins import (  # noqa: E402
    copy_store,
    harness_on_copy_of,
    migrated_prefect_db,
    migrated_store,
)

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

# service_stack, service_workers: the session's servers, for tests/service and tests/browser;
# skips: a skip for a missing dependency fails the run in CI; timeouts: each test's time
# limit by family; parallel: which tests one xdist worker runs together; pytester: to test
# those hooks.
pytest_plugins = [
    "tests.service_fixtures",
    "tests.skips",
    "tests.timeouts",
    "tests.parallel",
    "pytester",
]


@pytest.fixture(scope="session")
def debian_dir() -> Path:
    """Debian's dataset-fashion-mnist folder (CI installs it; `make test` does where it can)."""
    if not (DEBIAN_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(missing(f"{DEBIAN_DIR}", "apt-get install dataset-fashion-mnist"))
    return DEBIAN_DIR


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with its schema migrated and nothing else: migrating one costs
    seconds, so it is made once (per MLflow version, kept beside pytest's temporary folders
    for later sessions too) and copied for each test that wants a store of its own."""
    return migrated_store(tmp_path_factory.getbasetemp().parent / "fmnist-migrated-stores")


@pytest.fixture
def fresh_store(migrated_db: Path, tmp_path: Path) -> str:
    """The URI of a new, empty SQLite tracking store of this test's own (tmp_path/store)."""
    return copy_store(migrated_db, tmp_path / "store")


@pytest.fixture(scope="session")
def migrated_prefect(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated Prefect database (made once per Prefect version, kept for later sessions):
    the harness's server starts on a copy instead of migrating a new one."""
    return migrated_prefect_db(tmp_path_factory.getbasetemp().parent / "fmnist-migrated-stores")


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory, migrated_prefect: Path) -> Iterator[None]:
    """Prefect's test harness (a temporary API and database) with its own result storage, one
    per module: its settings must not outlive the module's tests."""
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


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[LocalServer]:
    """A started LocalServer over tmp_path/'www'; shut down afterwards."""
    root = tmp_path / "www"
    root.mkdir()
    server = LocalServer(root)
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


@pytest.fixture
def copy_debian(debian_dir: Path) -> Callable[[Path], Path]:
    """Copy (link) the four real .gz files into a folder."""

    def copy(dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        for f in debian_dir.glob("*.gz"):
            shutil.copyfile(f, dest / f.name)
        return dest

    return copy


@pytest.fixture
def trickle_server(tmp_path: Path) -> Iterator[TrickleServer]:
    """A started TrickleServer over tmp_path/'slow'; stopped afterwards."""
    root = tmp_path / "slow"
    root.mkdir()
    server = TrickleServer(root)
    server.thread.start()
    try:
        yield server
    finally:
        server.close()
