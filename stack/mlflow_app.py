"""MLflow's basic-auth app with browser origins held to the ones configured.

    mlflow server --app-name fmnist-basic-auth --cors-allowed-origins URL,URL ...

MLflow's own CORS layer admits every localhost origin on any port, whatever
--cors-allowed-origins says (its LOCALHOST_ORIGIN_PATTERNS are always added): a page on
http://localhost:8888 could then call the API with the browser's cached basic-auth
credentials and read the answers. This app is MLflow's (mlflow.server.auth:create_app) behind
one more layer that answers 403 to any request whose Origin header is not in
MLFLOW_SERVER_CORS_ALLOWED_ORIGINS (what --cors-allowed-origins sets); requests without an
Origin (API clients, same-origin page loads) pass untouched.

Registered as the `mlflow.app` entry point `fmnist-basic-auth` (pyproject.toml). Standard
library and MLflow only: docker/mlflow.Dockerfile installs this file on its own.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Any]
ORIGINS_ENV = "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"


def allowed_origins() -> frozenset[str]:
    """The origins --cors-allowed-origins named (none: no browser origin at all)."""
    value = os.environ.get(ORIGINS_ENV, "")
    return frozenset(o.strip().rstrip("/") for o in value.split(",") if o.strip() and o != "*")


class OnlyAllowedOrigins:
    """ASGI middleware: 403, without any CORS header, for a request from another origin."""

    def __init__(self, app: ASGIApp, origins: frozenset[str]) -> None:
        self.app = app
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """Refuse a foreign Origin before MLflow sees the request; pass everything else."""
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            origin = headers.get(b"origin", b"").decode("latin-1")
            if origin and origin not in self.origins:
                body = b"Cross-origin request refused: origin not allowed\n"
                await send(
                    {
                        "type": "http.response.start",
                        "status": 403,
                        "headers": [
                            (b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def create_app() -> OnlyAllowedOrigins:
    """The `fmnist-basic-auth` app: MLflow's basic-auth app (uvicorn's FastAPI form) behind
    OnlyAllowedOrigins."""
    from mlflow.server.auth import create_app as basic_auth_app

    app = basic_auth_app()
    if not callable(app) or not hasattr(app, "router"):  # Flask under gunicorn/waitress
        raise RuntimeError("fmnist-basic-auth runs under uvicorn only (mlflow server's default)")
    return OnlyAllowedOrigins(app, allowed_origins())
