"""Helpers shared by the tests (not fixtures: those are in the conftest files): synthetic
IDX files, local HTTP servers, the chapter's settings, learnable images, a closed port, and
the fault tests' workspace of real `fmnist run` processes."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO_ROOT / "test-output" / "screenshots"


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """Encode a uint8 array as an IDX file (big-endian header of magic and dimensions)."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def sha256(data: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def gz(data: bytes) -> bytes:
    """gzip-compress bytes."""
    return gzip.compress(data)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; fails the first N GETs of a path with a chosen status if told to, or
    announces a Content-Length longer than the body it sends (a connection dropped early)."""

    failures: dict[str, list[int]]
    overstated: dict[str, list[int | None]]
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        queue = self.failures.get(self.path)
        if queue:
            self.send_error(queue.pop(0))
            return
        extra = self.overstated.get(self.path)
        if extra:
            body = Path(self.directory, self.path.lstrip("/")).read_bytes()
            more = extra.pop(0)
            self.send_response(200)
            if more is not None:  # None: no Content-Length at all, the body ends at close
                self.send_header("Content-Length", str(len(body) + more))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True  # the body ends here, short of its length
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass


class LocalServer:
    """An HTTP server on 127.0.0.1, a free port, serving one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = type(
            "Handler",
            (_Handler,),
            {"failures": {}, "overstated": {}, "requests": [], "directory": None},
        )
        self.handler = handler

        def factory(*args, **kwargs):
            return handler(*args, directory=str(root), **kwargs)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), factory)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # A short poll interval: shutdown() waits up to one interval (0.5 s by default, per test).
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def fail(self, path: str, *statuses: int) -> None:
        """Make the next GETs of path answer with these HTTP statuses, in order."""
        self.handler.failures[path] = list(statuses)

    def overstate(self, path: str, *extra: int | None) -> None:
        """Make the next GETs of path announce this many more bytes than they send (None: send
        no Content-Length)."""
        self.handler.overstated[path] = list(extra)

    @property
    def requests(self) -> list[str]:
        """Paths requested so far."""
        return self.handler.requests


class TrickleServer:
    """An HTTP server on 127.0.0.1 that serves a folder's files a few bytes at a time.

    Headers (with the true Content-Length) go out at once, then `chunk` bytes every
    `interval` seconds: every read returns well within any per-read timeout, so only a
    total deadline stops a client.
    """

    def __init__(self, root: Path, chunk: int = 1, interval: float = 0.05) -> None:
        stop = self.stop = threading.Event()
        self.root, self.chunk, self.interval = root, chunk, interval
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                step = server.chunk  # read per request: a test may change it
                for i in range(0, len(data), step):
                    if stop.wait(server.interval):
                        return
                    try:
                        self.wfile.write(data[i : i + step])
                        self.wfile.flush()
                    except OSError:  # the client gave up
                        return

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def close(self) -> None:
        """Stop serving and end the trickles in progress."""
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def fit_params(**changes: object):
    """The chapter's fitting settings (the book profile's train section), some changed."""
    from fmnist.conf import load_config
    from fmnist.stages.train import FitParams

    return FitParams.of({**load_config("book").train.model_dump(), **changes})


def augment_params(**changes: object):
    """The chapter's augmentation recipe (the book profile's augment section, through the
    augment task's mapping), some changed."""
    from dataclasses import replace

    from fmnist.conf import load_config
    from fmnist.tasks.augment import augment_params as recipe_of_config

    return replace(recipe_of_config(load_config("book").augment), **changes)


def learnable_images(per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose brightness depends on their class (every class, per_class times each):
    learnable in a couple of epochs, for tests of the fit loop."""
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(10), per_class).astype(np.int32)
    x = (rng.random((len(y), 28, 28, 1)) * 0.2 + (y[:, None, None, None] / 12.0)).astype(np.float32)
    return x, y


def closed_port() -> int:
    """A port of 127.0.0.1 that nobody listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends


def screenshot_path(name: str) -> Path:
    """test-output/screenshots/<name> (the folder created if needed)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / name


# -- the fault tests' real runs ------------------------------------------------------------

TINY = [
    "data.train_subset=256",
    "data.test_subset=200",
    "train.models=[pool_dropout]",
    "augment.n_augmented=64",
    # The fault runs test what a fault loses, not the model: after one epoch on 256 images
    # pool_dropout scored 0.255, under smoke's floor, and a run with no usable model fails.
    "tracking.promotion_floor=0.0",
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
            "PYTHONPATH": str(REPO_ROOT),
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


def sweep_dead_sessions(prefix: str, *, stacks: bool = False, tmp: Path | None = None) -> list[str]:
    """Remove the folders <tmp>/<prefix><pid>-* of test sessions that died before their
    clean-up (a Ctrl-C of an xdist run, a SIGKILL), stopping the stack in each first when
    `stacks`; a live pid's (a suite running beside this one) is left alone. Their names."""
    import psutil

    from fmnist.stack import StackError
    from fmnist.stack.core import Stack

    swept = []
    for path in sorted(Path(tmp or tempfile.gettempdir()).glob(f"{prefix}*")):
        pid = path.name.removeprefix(prefix).split("-")[0]
        if not pid.isdigit() or psutil.pid_exists(int(pid)):
            continue
        if stacks:
            with contextlib.suppress(StackError, OSError):
                Stack(path).down()
        shutil.rmtree(path, ignore_errors=True)
        swept.append(path.name)
    return swept
