"""Shared fixtures: the real Fashion-MNIST files, synthetic IDX files, a local HTTP server."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from fmnist.conf import load_config
from fmnist.conf.settings import apply_process_defaults
from fmnist.stages.backend import apply_backend, resolve_backend

# Before anything imports keras or prefect: the same defaults as the `fmnist` command, and
# the same backend (the profile's, unless KERAS_BACKEND says otherwise: CI's JAX leg).
apply_process_defaults()
apply_backend(resolve_backend(load_config("book").keras_backend))

pytest.register_assert_rewrite("tests.skips")
from tests.skips import missing  # noqa: E402

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

# service_stack, service_workers: the session's servers, for tests/service and tests/browser;
# skips: a skip for a missing dependency fails the run in CI; pytester: to test that hook.
pytest_plugins = ["tests.service_fixtures", "tests.skips", "pytester"]


@pytest.fixture(scope="session")
def debian_dir() -> Path:
    """Debian's dataset-fashion-mnist folder (CI installs it; `make test` does where it can)."""
    if not (DEBIAN_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(missing(f"{DEBIAN_DIR}", "apt-get install dataset-fashion-mnist"))
    return DEBIAN_DIR


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


def fit_params(**changes: object):
    """The chapter's fitting settings (the book profile's train section), some changed."""
    from fmnist.conf import load_config
    from fmnist.stages.train import FitParams

    return FitParams.of({**load_config("book").train.model_dump(), **changes})


def augment_params(**changes: object):
    """The chapter's augmentation recipe (the book profile's augment section), some changed."""
    from fmnist.conf import load_config
    from fmnist.stages.augment import AugmentParams

    return AugmentParams.of({**load_config("book").augment.model_dump(), **changes})


def learnable_images(per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose brightness depends on their class (every class, per_class times each):
    learnable in a couple of epochs, for tests of the fit loop."""
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(10), per_class).astype(np.int32)
    x = (rng.random((len(y), 28, 28, 1)) * 0.2 + (y[:, None, None, None] / 12.0)).astype(np.float32)
    return x, y
