"""The Prefect API of a command run without a server: a local one that dies with us.

With no PREFECT_API_URL, Prefect starts an ephemeral API server as a child process of
whatever runs a flow, in the same process group, and stops it from an atexit hook. A
SIGTERM or SIGKILL of our process skips that hook and the server runs on for good; a Ctrl-C
or a SIGTERM sent to the whole group kills the server first, and Prefect's client then spends
minutes retrying it, unable to record that the flow run ended.

So `fmnist run` starts that server itself, the way Prefect does (uvicorn on Prefect's app
factory, the dashboard off), as a child that dies with it (flows/children.py: a session of
its own, PR_SET_PDEATHSIG), and points Prefect's settings at it for the length of the block.
Its start is serialised by a file lock in PREFECT_HOME: two first runs at once would both
migrate a fresh database and one would fail on `duplicate column name`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fmnist.flows.children import free_port, start_child

STOP_WAIT_S = 10.0


class LocalApiError(RuntimeError):
    """The local Prefect API server did not start; the message says why."""


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start_server(timeout: float) -> tuple[subprocess.Popen[bytes], str]:
    """Start a local Prefect API server that dies with this process; (process, API URL)."""
    import prefect
    from filelock import FileLock
    from prefect.settings import PREFECT_HOME, get_current_settings

    home = Path(PREFECT_HOME.value()).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        **get_current_settings().to_environment_variables(exclude_unset=True),
        # What Prefect's own ephemeral server sets: no dashboard, ephemeral services.
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    argv = [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent)]
    argv += ["--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--log-level", "error", "--lifespan", "on"]
    with FileLock(str(home / "fmnist-local-api.lock"), timeout=timeout):
        process = start_child(argv, env, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if process.poll() is not None:
                raise LocalApiError(f"the local Prefect API server exited ({process.returncode})")
            if time.monotonic() > deadline:
                stop_server(process)
                raise LocalApiError(f"the local Prefect API server did not answer in {timeout} s")
            time.sleep(0.2)
    return process, url


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """Stop the server (SIGTERM, then SIGKILL after STOP_WAIT_S)."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def prefect_api() -> Iterator[str]:
    """The API flow runs report to in this block: PREFECT_API_URL if set, else a local
    server of our own that stops at the end of the block or when this process dies."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    if configured := PREFECT_API_URL.value():
        yield configured
        return
    process, url = start_server(float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()))
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                _send_logs()  # the flow's last log lines, while their server still runs
    finally:
        stop_server(process)


def _send_logs() -> None:
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # bounded by Prefect (5 s)
