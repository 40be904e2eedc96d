"""The serving front: a small threaded HTTP reverse proxy in front of MLflow's scoring server.

It adds what the scoring server lacks: a bound on the request size (413), optional basic
auth (401), the version that answered (an `X-Model-Version` header on every answer, and
`GET /version`), and a backend that can be switched under it (stages/swap.py) while
requests are in flight. Standard library only.

    POST /invocations   forwarded to the backend in use (MLflow's scoring protocol)
    GET  /version       {"name", "version", "uri", "since"} of the model answering
    GET  /ping, /health 200 once a model answers, else 503 (no auth: for health checks)
"""

from __future__ import annotations

import base64
import hmac
import http.client
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fmnist.stages.swap import Swapper

VERSION_HEADER = "X-Model-Version"
URI_HEADER = "X-Model-Uri"
OPEN_PATHS = ("/ping", "/health")
MAX_MESSAGE = 1000  # characters of an error message passed on to the client
# MLflow's messages that repeat the request before the reason: (start, marker before the
# reason, what replaces the echo).
ECHOES = (
    ("Failed to predict data", "\nError: ", ""),
    ("Failed to enforce schema of data", ". Error: ", "input does not match the signature: "),
)


def tidy_error(body: bytes) -> tuple[bytes, str | None]:
    """A scoring server's error answer without the request echoed in it; and the stack
    trace it carried, if any (for the front's log, not the client).

    MLflow's scoring server puts the whole parsed input into the message of a model's error
    ("Failed to predict data '<every pixel>'. \nError: ...") and of a JSON error
    ("...\nInput: <the payload>") and of a schema error: megabytes for a batch, with the
    problem at the end.
    """
    try:
        error = json.loads(body)
    except ValueError:
        return body, None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return body, None
    message: str = error["message"]
    for prefix, marker, instead in ECHOES:
        if message.startswith(prefix) and marker in message:
            message = instead + message.rsplit(marker, 1)[1]  # the last: MLflow's own
    message = message.split("\nInput: ", 1)[0].strip()
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "..."
    trace = error.pop("stack_trace", None)
    return json.dumps(error | {"message": message}).encode(), trace


def basic_auth_header(credentials: str) -> str:
    """The Authorization header value for 'user:password'."""
    return "Basic " + base64.b64encode(credentials.encode()).decode("ascii")


class FrontServer(ThreadingHTTPServer):
    """The front's listening socket, with what its handlers share."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        swapper: Swapper,
        *,
        max_bytes: int,
        timeout_s: float,
        credentials: str | None = None,
    ) -> None:
        super().__init__(address, FrontHandler)
        self.swapper, self.max_bytes, self.timeout_s = swapper, max_bytes, timeout_s
        self.expected_auth = basic_auth_header(credentials) if credentials else None

    @property
    def url(self) -> str:
        """http://host:port of this front."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class FrontHandler(BaseHTTPRequestHandler):
    """One client connection (keep-alive: HTTP/1.1)."""

    protocol_version = "HTTP/1.1"
    server: FrontServer
    _backends = threading.local()  # per thread: backend URL -> its kept-alive connection

    def setup(self) -> None:
        self.timeout = self.server.timeout_s  # a client that stalls mid-request is dropped
        super().setup()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # the scoring server logs each request; errors still go to stderr

    def do_GET(self) -> None:
        """Health, and which version answers."""
        path = urllib.parse.urlsplit(self.path).path
        if path in OPEN_PATHS:
            target = self.server.swapper.target
            if target is None:
                self._json(503, {"error_code": "UNAVAILABLE", "message": "no model loaded yet"})
            else:
                self._send(200, b"\n", "application/json", target)
        elif not self._authorised():
            return
        elif path == "/version":
            target = self.server.swapper.target
            if target is None:
                self._json(503, {"error_code": "UNAVAILABLE", "message": "no model loaded yet"})
                return
            since = self.server.swapper.since
            body = {"name": target.name, "version": target.version, "uri": target.uri}
            self._json(200, body | {"since": since}, target)
        else:
            self._json(404, {"error_code": "NOT_FOUND", "message": f"no such path: {path}"})

    def do_POST(self) -> None:
        """Score: the body goes to the backend in use; its answer comes back, versioned."""
        path = urllib.parse.urlsplit(self.path).path
        if not self._authorised():
            return
        if path != "/invocations":
            self._json(404, {"error_code": "NOT_FOUND", "message": f"no such path: {path}"})
            return
        body = self._body()
        if body is None:
            return
        with self.server.swapper.serving() as backend:
            if backend is None:
                self._json(503, {"error_code": "UNAVAILABLE", "message": "no model loaded yet"})
                return
            headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
            try:
                status, data, ctype = self._forward(backend.url, body, headers)
            except (OSError, http.client.HTTPException) as exc:
                self._json(502, {"error_code": "BAD_GATEWAY", "message": f"model server: {exc}"})
                return
            if 400 <= status < 600 and ctype.startswith("application/json"):
                data, trace = tidy_error(data)
                if trace:
                    self.log_error("model server error:\n%s", trace)
            self._send(status, data, ctype, backend.target)

    def _body(self) -> bytes | None:
        """The request body within the size limit, else None (the error is answered)."""
        length = self.headers.get("Content-Length")
        if length is None:
            # Without a length the size is known only after reading it all.
            self.close_connection = True
            self._json(411, {"error_code": "LENGTH_REQUIRED", "message": "send Content-Length"})
            return None
        try:
            size = int(length)
        except ValueError:
            self.close_connection = True
            self._json(400, {"error_code": "BAD_REQUEST", "message": "bad Content-Length"})
            return None
        if size > self.server.max_bytes:
            # The body is left unread: the connection cannot be reused.
            self.close_connection = True
            limit = self.server.max_bytes / 2**20
            message = f"payload of {size} bytes is over the limit of {limit:g} MiB"
            self._json(413, {"error_code": "PAYLOAD_TOO_LARGE", "message": message})
            return None
        return self.rfile.read(size)

    def _forward(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, str]:
        # Once more on a fresh connection if a kept-alive one was closed by the backend
        # (uvicorn drops idle connections after 5 s): predicting is safe to repeat.
        for attempt in (0, 1):
            conn = self._connection(url, fresh=attempt > 0)
            try:
                conn.request("POST", "/invocations", body, headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                if attempt:
                    raise
                continue
            return response.status, data, response.getheader("Content-Type", "application/json")
        raise AssertionError("unreachable")

    def _connection(self, url: str, fresh: bool) -> http.client.HTTPConnection:
        pool: dict[str, http.client.HTTPConnection] = getattr(self._backends, "pool", {})
        for other in [u for u in pool if u != url]:  # a retired backend's connection
            pool.pop(other).close()
        if fresh or url not in pool:
            if url in pool:
                pool.pop(url).close()
            parts = urllib.parse.urlsplit(url)
            pool[url] = http.client.HTTPConnection(
                parts.hostname, parts.port, timeout=self.server.timeout_s
            )
        self._backends.pool = pool
        return pool[url]

    def _authorised(self) -> bool:
        expected = self.server.expected_auth
        given = self.headers.get("Authorization", "")
        if expected is None or hmac.compare_digest(given.encode(), expected.encode()):
            return True
        self.close_connection = True  # the body (if any) is not read
        message = "authentication required (basic auth)"
        self._json(401, {"error_code": "UNAUTHENTICATED", "message": message}, auth=True)
        return False

    def _json(self, status: int, body: dict[str, Any], target: Any = None, auth: bool = False):
        extra = {"WWW-Authenticate": 'Basic realm="fmnist-serving"'} if auth else {}
        self._send(status, json.dumps(body).encode(), "application/json", target, extra)

    def _send(
        self,
        status: int,
        data: bytes,
        ctype: str,
        target: Any = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        if target is not None:
            self.send_header(VERSION_HEADER, target.version)
            self.send_header(URI_HEADER, target.uri)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
