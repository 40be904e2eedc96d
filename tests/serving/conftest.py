"""Serving fixtures: a store with two registered versions (small models trained on the real
data), and the real `fmnist serve` (front + MLflow's scoring server) on a free 127.0.0.1
port, stopped afterwards."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from fmnist.flows.children import free_port
from tests.serving.store import NAME, ServedStore, make_store

REPO = Path(__file__).resolve().parents[2]
# A 2-core machine shared with other work: TensorFlow's import and the first model load in a
# fresh scoring server take well over a minute at worst.
READY_S = 300


def png_b64(pixels: np.ndarray, mode: str = "L", size: tuple[int, int] | None = None) -> str:
    """base64 text of a PNG of a uint8 (28, 28) image, optionally in colour or resized."""
    img = Image.fromarray(pixels).convert(mode)
    if size:
        img = img.resize(size)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="session")
def served_store(tmp_path_factory, debian_dir) -> ServedStore:
    """Two versions of NAME (1 is @champion) in a SQLite store of the session's own."""
    return make_store(tmp_path_factory.mktemp("served-store"), debian_dir)


class Front:
    """A running `python -m fmnist.flows.serve`."""

    def __init__(self, process: subprocess.Popen, url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    def post(self, payload: object, **kwargs: object) -> requests.Response:
        """POST a JSON payload to /invocations."""
        return requests.post(f"{self.url}/invocations", json=payload, timeout=60, **kwargs)

    def output(self) -> str:
        """What the front and its scoring servers printed."""
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="session")
def start_front(tmp_path_factory) -> Iterator[Callable[..., Front]]:
    """start_front(store, model_uri, *overrides) -> a ready Front; all stopped at the end."""
    started: list[Front] = []

    def start(store: ServedStore, model_uri: str, *overrides: str) -> Front:
        port = free_port("127.0.0.1")
        log = tmp_path_factory.mktemp("front") / "serve.log"
        env = {k: v for k, v in os.environ.items() if k != "FMNIST_SERVING_AUTH"}
        argv = [sys.executable, "-m", "fmnist.flows.serve", "--tracking-uri", store.tracking_uri]
        argv += ["--model", model_uri, "--port", str(port), *overrides]
        with open(log, "wb") as out:
            process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=out)
        front = Front(process, f"http://127.0.0.1:{port}", log)
        started.append(front)
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"fmnist serve exited ({process.returncode}):\n{front.output()}")
            try:
                if requests.get(f"{front.url}/ping", timeout=5).status_code == 200:
                    return front
            except requests.ConnectionError:
                pass
            time.sleep(1)
        pytest.fail(f"fmnist serve not ready in {READY_S} s:\n{front.output()[-5000:]}")

    try:
        yield start
    finally:
        for front in started:
            stop(front.process)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM (the front drains and stops its scoring servers), SIGKILL after a minute."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()  # its scoring servers get SIGTERM from the kernel (PDEATHSIG)
            process.wait()


__all__ = ["NAME", "Front", "png_b64"]
