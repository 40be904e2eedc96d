"""Session fixtures: a real PostgreSQL, Prefect server and MLflow server (and workers) on free
127.0.0.1 ports, built from flows/stack.py, stopped at the end of the session even on failure.

They start once per session (about half a minute on 2 cores) and are shared by every test that
asks for them (tests/service, tests/browser); a test that needs a clean slate makes its own
experiment, work pool or database. A plugin module (registered in tests/conftest.py) rather
than a conftest, so that both folders see the same session fixtures.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from flows import stack
from tests.skips import missing


@dataclass
class ServiceStack:
    """The running servers and where to reach them."""

    state_dir: Path
    postgres: stack.Postgres
    prefect: stack.PrefectServer
    mlflow: stack.MlflowServer

    @property
    def pg_port(self) -> int:
        """PostgreSQL's port on 127.0.0.1 (user postgres, trust authentication)."""
        return self.postgres.port

    def database_url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        """SQLAlchemy URL of one of the cluster's databases."""
        return self.postgres.url(database, driver=driver)

    @property
    def prefect_url(self) -> str:
        """The Prefect dashboard."""
        return self.prefect.url

    @property
    def prefect_api_url(self) -> str:
        """What PREFECT_API_URL should be."""
        return self.prefect.api_url

    @property
    def mlflow_url(self) -> str:
        """The MLflow tracking URI (and UI)."""
        return self.mlflow.url


@dataclass
class Workers:
    """Prefect workers by pool name, polling the session's server."""

    by_pool: dict[str, stack.PrefectWorker] = field(default_factory=dict)

    def __getitem__(self, pool: str) -> stack.PrefectWorker:
        return self.by_pool[pool]


@pytest.fixture(scope="session")
def service_stack() -> Iterator[ServiceStack]:
    """PostgreSQL (databases prefect and mlflow), the Prefect server and the MLflow server."""
    if (why := stack.postgres_missing()) is not None:
        pytest.skip(missing(why))  # as debian_dir: CI installs it, a laptop may not have it
    # Under /tmp, not pytest's tmp_path: as root, PostgreSQL runs as `postgres`, which cannot
    # enter /tmp/pytest-of-root (mode 0700).
    state = stack.temp_state_dir("fmnist-service-")
    postgres = stack.Postgres(state, stack.free_port(), durable=False)
    prefect = stack.PrefectServer(
        state, stack.free_port(), postgres.url("prefect", driver="postgresql+asyncpg")
    )
    mlflow = stack.MlflowServer(
        state, stack.free_port(), postgres.url("mlflow", driver="postgresql+psycopg2"), workers=1
    )
    try:
        postgres.start()
        stack.start_all([prefect, mlflow])
        yield ServiceStack(state, postgres, prefect, mlflow)
    finally:
        try:
            stack.stop_all([prefect, mlflow])
        finally:
            postgres.stop()
            shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def service_workers(service_stack: ServiceStack) -> Iterator[Workers]:
    """Workers for the `cpu` and `gpu` process pools (created first) of the session's server."""
    stack.create_work_pools(
        service_stack.prefect_api_url, stack.POOLS, state_dir=service_stack.state_dir
    )
    workers = Workers(
        {
            pool: stack.PrefectWorker(
                service_stack.state_dir,
                pool,
                service_stack.prefect_api_url,
                service_stack.mlflow_url,
            )
            for pool in stack.POOLS
        }
    )
    try:
        stack.start_all(list(workers.by_pool.values()))
        yield workers
    finally:
        stack.stop_all(list(workers.by_pool.values()))
