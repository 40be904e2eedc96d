"""The serving front's plain parts: the swap (stages/swap.py) and the proxy (stages/proxy.py),
with small HTTP servers on 127.0.0.1 standing in for MLflow's scoring server (the real one is
tests/serving/)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fmnist.stages.proxy import FrontServer, basic_auth_header, tidy_error
from fmnist.stages.swap import Swapper, Target


class FakeBackend:
    """Answers POST /invocations with its version; can hold requests, fail, or die."""

    def __init__(self, target: Target, hold: threading.Event | None = None, status: int = 200):
        backend = self
        self.target, self.hold, self.status = target, hold, status
        self.stopped, self.served = False, 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                if backend.hold is not None:
                    backend.hold.wait(10)
                backend.served += 1
                body = json.dumps({"predictions": [{"version": backend.target.version}]})
                if backend.status != 200:
                    echo = "Failed to predict data '" + "0.0, " * 5000 + "'. \nError: image 0: bad"
                    body = json.dumps({"error_code": "X", "message": echo, "stack_trace": "tb"})
                data = body.encode()
                self.send_response(backend.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}).start()

    def alive(self) -> bool:
        return not self.stopped

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.httpd.shutdown()
            self.httpd.server_close()


class Registry:
    """Where the alias points (a test moves it), and the backends started so far."""

    def __init__(self) -> None:
        self.version: str | None = "1"
        self.error: Exception | None = None
        self.launched: list[FakeBackend] = []
        self.broken: set[str] = set()  # versions whose backend fails its check
        self.hold: threading.Event | None = None

    def resolve(self) -> Target | None:
        if self.error:
            raise self.error
        return None if self.version is None else Target(f"models:/m/{self.version}", self.version)

    def launch(self, target: Target) -> FakeBackend:
        backend = FakeBackend(target, self.hold)
        self.launched.append(backend)
        return backend

    def check(self, backend: FakeBackend) -> None:
        if backend.target.version in self.broken:
            raise RuntimeError("no answer")


@pytest.fixture
def registry() -> Iterator[Registry]:
    reg = Registry()
    try:
        yield reg
    finally:
        for backend in reg.launched:
            backend.stop()


@pytest.fixture
def swapper(registry: Registry) -> Swapper:
    return Swapper(
        registry.resolve,
        registry.launch,
        registry.check,
        drain_timeout_s=5,
        retry_after_s=60,
        log=lambda _: None,
    )


def make_front(swapper: Swapper, **kwargs: object) -> FrontServer:
    front = FrontServer(
        ("127.0.0.1", 0), swapper, max_bytes=kwargs.pop("max_bytes", 1000), timeout_s=5, **kwargs
    )
    threading.Thread(target=front.serve_forever, kwargs={"poll_interval": 0.02}).start()
    return front


@pytest.fixture
def front(swapper: Swapper) -> Iterator[FrontServer]:
    server = make_front(swapper)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def post(url: str, body: bytes = b'{"inputs": []}', headers: dict | None = None):
    """(status, headers, JSON body) of POST url/invocations."""
    request = urllib.request.Request(
        f"{url}/invocations", body, {"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read())


def test_the_first_follow_serves_the_target_and_the_next_leaves_it(swapper, registry, front):
    assert post(front.url)[0] == 503  # nothing yet: unavailable, not refused
    assert swapper.follow() == "now serving version 1"
    status, headers, body = post(front.url)
    assert status == 200 and body == {"predictions": [{"version": "1"}]}
    assert headers["X-Model-Version"] == "1"
    assert headers["X-Model-Uri"] == "models:/m/1"
    assert swapper.follow() == "unchanged"
    assert len(registry.launched) == 1


def test_a_move_switches_only_once_the_new_one_answers_and_stops_the_old(swapper, registry):
    swapper.follow()
    registry.version = "2"
    assert swapper.follow() == "now serving version 2"
    old, new = registry.launched
    assert old.stopped and not new.stopped
    assert swapper.target.version == "2"


def test_a_version_that_fails_its_check_is_not_served_and_not_retried_at_once(swapper, registry):
    swapper.follow()
    registry.version, registry.broken = "2", {"2"}
    assert "version 2 did not start (no answer); keeping version 1" in swapper.follow()
    assert swapper.target.version == "1"
    assert registry.launched[1].stopped and not registry.launched[0].stopped
    assert "failed recently" in swapper.follow()  # no second launch within retry_after_s
    assert len(registry.launched) == 2
    swapper.retry_after_s = 0
    registry.broken = set()
    assert swapper.follow() == "now serving version 2"


def test_a_registry_away_or_an_alias_gone_keeps_the_version_served(swapper, registry):
    swapper.follow()
    registry.error = ConnectionError("tracking server unreachable")
    assert "unreachable" in swapper.follow() and swapper.target.version == "1"
    registry.error, registry.version = None, None
    assert "not there; keeping version 1" in swapper.follow()
    assert not registry.launched[0].stopped


def test_a_dead_backend_is_replaced(swapper, registry):
    swapper.follow()
    registry.launched[0].stop()
    assert swapper.follow() == "now serving version 1"
    assert len(registry.launched) == 2 and registry.launched[1].alive()


def test_requests_in_flight_finish_on_the_old_version(swapper, registry, front):
    registry.hold = hold = threading.Event()
    swapper.follow()
    results: list = []
    client = threading.Thread(target=lambda: results.append(post(front.url)))
    client.start()
    while registry.launched[0].served == 0 and not _held(swapper):
        time.sleep(0.01)
    registry.version, registry.hold = "2", None
    follower = threading.Thread(target=swapper.follow)
    follower.start()
    while swapper.target.version != "2":  # switched while the old one still works
        time.sleep(0.01)
    assert not registry.launched[0].stopped
    assert post(front.url)[1]["X-Model-Version"] == "2"
    hold.set()
    client.join(10)
    follower.join(10)
    assert results[0][0] == 200 and results[0][1]["X-Model-Version"] == "1"
    assert registry.launched[0].stopped


def _held(swapper: Swapper) -> bool:
    slot = swapper._slot
    return slot is not None and slot.inflight > 0


def test_version_and_health(swapper, front):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{front.url}/ping", timeout=5)
    assert err.value.code == 503
    swapper.follow()
    with urllib.request.urlopen(f"{front.url}/version", timeout=5) as response:
        body = json.loads(response.read())
    assert body["version"] == "1" and body["uri"] == "models:/m/1" and body["since"] > 0
    with urllib.request.urlopen(f"{front.url}/ping", timeout=5) as response:
        assert response.status == 200 and response.headers["X-Model-Version"] == "1"


def test_a_payload_over_the_limit_is_413_and_the_next_request_succeeds(swapper, front):
    swapper.follow()
    status, _, body = post(front.url, b"x" * 1001)
    assert status == 413 and "1001 bytes is over the limit" in body["message"]
    assert post(front.url, b"x" * 1000)[0] == 200


def test_basic_auth_when_asked_for(swapper):
    swapper.follow()
    server = make_front(swapper, credentials="alice:secret")
    try:
        assert post(server.url)[0] == 401
        wrong = {"Authorization": basic_auth_header("alice:wrong")}
        assert post(server.url, headers=wrong)[0] == 401
        right = {"Authorization": basic_auth_header("alice:secret")}
        assert post(server.url, headers=right)[0] == 200
        with urllib.request.urlopen(f"{server.url}/ping", timeout=5) as response:
            assert response.status == 200  # health checks need no credentials
    finally:
        server.shutdown()
        server.server_close()


def test_an_error_answer_loses_the_echoed_input_and_the_stack_trace(swapper, registry, front):
    swapper.follow()
    registry.launched[0].status = 400
    status, headers, body = post(front.url)
    assert status == 400 and headers["X-Model-Version"] == "1"
    assert body == {"error_code": "X", "message": "image 0: bad"}


def test_tidy_error_leaves_other_bodies_alone():
    assert tidy_error(b"not json") == (b"not json", None)
    raw = json.dumps({"message": "bad JSON: 'x'\nInput: \n" + "y" * 10_000}).encode()
    body, trace = tidy_error(raw)
    assert json.loads(body) == {"message": "bad JSON: 'x'"} and trace is None
    schema = (
        "Failed to predict data '{'picture': [0, 0]}'. \nError: Failed to enforce schema of data "
        "'{'picture': array(['" + "x" * 5000 + "'])}' with schema '['image': Any]'. Error: Model "
        "is missing inputs ['image']."
    )
    assert json.loads(tidy_error(json.dumps({"message": schema}).encode())[0]) == {
        "message": "input does not match the signature: Model is missing inputs ['image']."
    }
    long = json.dumps({"message": "z" * 5000}).encode()
    assert len(json.loads(tidy_error(long)[0])["message"]) == 1003
