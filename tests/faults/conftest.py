"""Faults injected into real runs: the `fmnist` CLI in subprocesses, servers on 127.0.0.1.

Each run is the smoke profile shrunk further (256 training images, 200 test images, one
small model), with its own PREFECT_HOME (Prefect's ephemeral API), SQLite tracking store
and data folders under the test's temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

TINY = [
    "data.train_subset=256",
    "data.test_subset=200",
    "train.models=[pool_dropout]",
    "augment.n_augmented=64",
]


@dataclass
class Workspace:
    """Where one test's runs keep their state."""

    root: Path
    source: str

    @property
    def db(self) -> Path:
        return self.root / "mlruns" / "mlflow.db"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.db}"

    @property
    def cache_dir(self) -> Path:
        return self.root / "data" / "fashion-mnist"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.root / "prefect"),
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            # The ephemeral API server gets 20 s to start by default: on a loaded 2-core
            # machine (two runs at once, other jobs) that is not always enough.
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
            **extra,
        }
        env.pop("PREFECT_API_URL", None)
        return env

    def run_args(self, *overrides: str, source: str | None = None) -> list[str]:
        return [
            sys.executable,
            "-m",
            "fmnist.flows.cli",
            "run",
            "--profile",
            "smoke",
            *TINY,
            f"data.sources=[{source or self.source}]",
            f"data.cache_dir={self.cache_dir}",
            f"data.prepared_dir={self.root / 'data' / 'prepared'}",
            f"data.store_uri={self.root / 'data' / 'store'}",
            f"tracking.artifact_location={self.root / 'mlruns' / 'artifacts'}",
            *overrides,
        ]

    def start(self, *overrides: str, source: str | None = None, **env: str) -> subprocess.Popen:
        """`fmnist run` in the background (stdout and stderr captured as text)."""
        return subprocess.Popen(
            self.run_args(*overrides, source=source),
            cwd=self.root,
            env=self.env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # Its own process group: a signal then reaches Prefect's ephemeral API server
            # too, as Ctrl-C at a terminal does, and nothing is left running.
            start_new_session=True,
            # Ctrl-C as at a terminal: a suite started in the background by a non-interactive
            # shell (`make test &`, nohup) inherits SIGINT ignored, and Python then installs
            # no KeyboardInterrupt handler: the run would never see the Ctrl-C test's signal.
            preexec_fn=_default_sigint,
        )

    def run(self, *overrides: str, timeout: float = 600, **kw) -> Finished:
        """`fmnist run` to the end; the exit status, output and wall time."""
        t0 = time.monotonic()
        proc = self.start(*overrides, **kw)
        out, err = proc.communicate(timeout=timeout)
        return Finished(proc.returncode, out, err, time.monotonic() - t0)


@dataclass
class Finished:
    """A finished command."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def workspace(tmp_path: Path, debian_dir: Path) -> Workspace:
    """A fresh workspace reading the IDX files from Debian's folder."""
    return Workspace(tmp_path, str(debian_dir))


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def partials(folder: Path) -> list[Path]:
    """Temporary download files or folders left in a cache folder."""
    return sorted(folder.rglob(".partial-*")) if folder.exists() else []


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Send a signal to a started run's whole process group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll until condition() holds; fail naming `what` after timeout or if proc ended."""
    end = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}: {err[-2000:]}")
        if time.monotonic() > end:
            pytest.fail(f"no {what} after {timeout:.0f} s")
        time.sleep(0.2)
