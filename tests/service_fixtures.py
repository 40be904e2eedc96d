"""Session fixtures: the real stack (stack/: supervisord running PostgreSQL, the Prefect
server, the MLflow server and the cpu/gpu workers) on free 127.0.0.1 ports in a temporary
state folder, with its own generated secrets; stopped at the end of the session even on
failure.

It starts once per session (about a minute on 2 cores) and is shared by every test that asks
for it (tests/service, tests/browser); a test that needs a clean slate makes its own
experiment, deployment name, work pool or data folder. No schedule is active in it. A plugin
module (registered in tests/conftest.py) rather than a conftest, so that both folders see the
same session fixtures. Helpers the service tests share (process trees, HTTP statuses) live
here too: no test module imports another.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from fmnist.stack import StackError
from fmnist.stack.core import Ports, Stack, temp_state_dir
from fmnist.stack.mlflow_server import MLFLOW_PIPELINE_USER
from fmnist.stack.postgres import Postgres, postgres_missing
from fmnist.stack.secrets import Secrets
from fmnist.stack.users import owned_dir, worker_user
from tests.helpers import sweep_dead_sessions
from tests.skips import missing

PORT_ATTEMPTS = 3
# The gpu pool's limit in the test stack: 2 at a time (the machine's cores), so the four
# training runs of a pipeline run queue in two rounds; the default (1 without a GPU) would
# run them one after another, twice as long.
TEST_GPU_CONCURRENCY = "2"


@dataclass
class ServiceStack:
    """The running stack and what a client needs to reach it."""

    state_dir: Path
    stack: Stack

    @property
    def secrets(self) -> Secrets:
        """The stack's secrets (tests look for them where they must not be)."""
        return self.stack.secrets

    @property
    def postgres(self) -> Postgres:
        """The PostgreSQL cluster (connect() as its superuser or a role)."""
        return self.stack.postgres

    @property
    def prefect_url(self) -> str:
        """The Prefect dashboard."""
        return self.stack.prefect.url

    @property
    def prefect_api_url(self) -> str:
        """What PREFECT_API_URL should be."""
        return self.stack.prefect.api_url

    @property
    def prefect_auth(self) -> str:
        """What PREFECT_API_AUTH_STRING should be."""
        return self.secrets.prefect_auth_string

    @property
    def mlflow_url(self) -> str:
        """The MLflow tracking URI (and UI)."""
        return self.stack.mlflow.url

    def prefect_settings(self) -> Any:
        """Prefect client settings for this stack (a context manager)."""
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        return temporary_settings(
            {PREFECT_API_URL: self.prefect_api_url, PREFECT_API_AUTH_STRING: self.prefect_auth}
        )

    def data_dir(self, name: str) -> Path:
        """A fresh folder the workers (the worker user) may write, for a test's data."""
        user = worker_user(create=False)
        owned_dir(self.state_dir / "data", user, 0o755)
        path = self.state_dir / "data" / name
        shutil.rmtree(path, ignore_errors=True)
        return owned_dir(path, user, 0o755)

    def pid(self, program: str) -> int | None:
        """A supervisord program's pid."""
        return self.stack.supervisor.program_pid(program)


# -- helpers of the service tests -------------------------------------------------------------


def alive(pid: int) -> bool:
    """Whether pid is a live process (a zombie counts as gone)."""
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False


def process_tree(root: int) -> set[int]:
    """root and its live descendants (for checking that nothing is left)."""
    try:
        children = psutil.Process(root).children(recursive=True)
    except psutil.NoSuchProcess:
        return set()
    return {p for p in {root, *(c.pid for c in children)} if alive(p)}


def process_uid(pid: int) -> int:
    """The real uid a process runs as."""
    return psutil.Process(pid).uids().real


def status_of(url: str, body: dict | None = None, auth: str | None = None, **headers: str) -> int:
    """The HTTP status a request gets (errors included); headers' _ become -."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    for key, value in headers.items():
        request.add_header(key.replace("_", "-"), value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _port_conflict(state: Path, exc: StackError) -> bool:
    """Whether a failed start was a port another process took meanwhile."""
    if "in use" in str(exc):
        return True
    logs = (state / "logs").glob("*.log")
    return any("already in use" in p.read_text(errors="replace").lower() for p in logs)


def start_stack(state: Path, **kwargs: Any) -> Stack:
    """`up` on free ports; when another process takes one of them between picking and
    binding, down and again on fresh ports (a few times)."""
    for attempt in range(PORT_ATTEMPTS):
        stack = Stack(state, Ports.free(), durable=False, mlflow_workers=1)
        try:
            stack.up(**kwargs)
            return stack
        except StackError as exc:
            stack.down()
            if attempt == PORT_ATTEMPTS - 1 or not _port_conflict(state, exc):
                raise
            for log in (state / "logs").glob("*.log"):
                log.unlink()
    raise AssertionError("unreachable")


STATE_PREFIX = "fmnist-service-"


@pytest.fixture(scope="session")
def service_stack() -> Iterator[ServiceStack]:
    """The whole stack, workers included, without deployments (tests apply their own); the
    test process's MLflow clients log in as the `pipeline` user meanwhile."""
    if (why := postgres_missing()) is not None:
        pytest.skip(missing(why))  # as debian_dir does: CI installs it, a laptop may not have it
    # Under /tmp, not pytest's tmp_path: as root, PostgreSQL runs as `postgres` and the
    # servers and workers as the service user, neither of which can enter /tmp/pytest-of-root.
    sweep_dead_sessions(STATE_PREFIX, stacks=True)  # what a killed session left running
    state = temp_state_dir(f"{STATE_PREFIX}{os.getpid()}-")
    names = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "FMNIST_GPU_CONCURRENCY")
    saved = {k: os.environ.get(k) for k in names}
    stack = None
    try:
        os.environ["FMNIST_GPU_CONCURRENCY"] = TEST_GPU_CONCURRENCY
        stack = start_stack(state, deployments=False)
        os.environ["MLFLOW_TRACKING_USERNAME"] = MLFLOW_PIPELINE_USER
        os.environ["MLFLOW_TRACKING_PASSWORD"] = stack.secrets.mlflow_pipeline_password
        yield ServiceStack(state, stack)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        with contextlib.suppress(StackError):
            Stack(state).down()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def compose() -> list[str]:
    """The compose tool (`docker compose` or docker-compose), for docker/compose.yaml's tests."""
    from tests.service.compose_config import compose_command

    command = compose_command()
    if command is None:
        pytest.skip(
            missing(
                "neither `docker compose` (v2 plugin) nor `docker-compose`",
                "apt-get install docker-compose",
            )
        )
    return command


@pytest.fixture(scope="module")
def resolved(compose: list[str]) -> dict[str, Any]:
    """docker/compose.yaml as the compose tool resolves it, the `gpu` profile's included."""
    from tests.service.compose_config import resolve

    return resolve(compose, "gpu")


@pytest.fixture(scope="session")
def service_workers(service_stack: ServiceStack) -> ServiceStack:
    """The same stack, for tests that say they need its cpu and gpu workers."""
    return service_stack
