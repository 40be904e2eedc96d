"""The stack's serving service (issue 21, item 3): supervised like the other servers, run
as the server user, asking its clients for basic auth, serving `@champion` and following it
to a new version after a promotion. (That a swap drops no request is shown against a local
store by tests/serving/test_promotion.py.)"""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from fmnist.stack.mlflow_server import MLFLOW_PIPELINE_USER, mlflow_login
from fmnist.stack.users import server_user
from tests.service_fixtures import ServiceStack, process_uid, status_of

pytestmark = pytest.mark.service

REGISTERED = "fashion-mnist-cnn"  # created at stack-up, the pipeline's


def _png() -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _predict(url: str, auth: str) -> tuple[int, dict[str, str]]:
    body = json.dumps({"inputs": [_png()]}).encode()
    request = urllib.request.Request(
        f"{url}/invocations",
        data=body,
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(auth.encode()).decode(),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def _champion(service_stack: ServiceStack) -> str:
    """Log a small model as the pipeline user, register it and make it champion."""
    import keras

    from fmnist.tracking import open_tracker

    secrets = service_stack.secrets
    with mlflow_login(MLFLOW_PIPELINE_USER, secrets.mlflow_pipeline_password):
        tracker = open_tracker(service_stack.mlflow_url, REGISTERED)
        model = keras.Sequential(
            [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")]
        )
        with tracker.run("serving-service-test") as run_id:
            uri = tracker.log.keras_model(run_id, model, np.zeros((2, 28, 28, 1), np.float32))
        version = tracker.registry.register(uri, REGISTERED)
        tracker.registry.set_alias(REGISTERED, "champion", version)
    return version


def test_the_serving_service_runs_as_the_server_user_and_asks_for_auth(service_stack):
    serving = service_stack.stack.serving
    pid = service_stack.pid("serving")
    assert pid is not None and process_uid(pid) == server_user().uid
    assert status_of(f"{serving.url}/ping") in (200, 503)  # open: for health checks
    assert _predict(serving.url, "serving:wrong")[0] == 401


def test_the_serving_service_follows_the_champion(service_stack):
    serving = service_stack.stack.serving
    version = _champion(service_stack)
    # Within the front's poll interval plus a scoring server's start (serving: settings).
    deadline = time.monotonic() + 600
    status, headers = 0, {}
    while time.monotonic() < deadline:
        status, headers = _predict(serving.url, serving.credentials)
        if status == 200 and headers.get("X-Model-Version") == version:
            break
        time.sleep(5)
    assert status == 200 and headers.get("X-Model-Version") == version, (status, headers)
