"""A promotion while clients send requests: the served alias moves to the new version with no
failed request, and the version header changes (the real front, MLflow's scoring servers
and a real registry)."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.serving.conftest import NAME, png_b64

pytestmark = pytest.mark.serving

SWAP_S = 300  # poll_interval_s (1) + a fresh scoring server's start on a busy machine


def test_a_promotion_swaps_the_served_version_without_a_failed_request(served_store, start_front):
    from fmnist.tracking.registry import Registry

    registry = Registry(served_store.tracking_uri)
    registry.set_alias(NAME, "champion", served_store.versions[0])
    front = start_front(served_store, f"models:/{NAME}@champion", "serving.poll_interval_s=1")
    payload = {"inputs": [png_b64(served_store.x_test[i]) for i in range(4)]}
    seen: list[tuple[int, str | None]] = []  # (status, X-Model-Version) of every request
    errors: list[str] = []
    stop = threading.Event()

    def client() -> None:
        with requests.Session() as session:  # keep-alive, as a real client
            while not stop.is_set():
                try:
                    r = session.post(f"{front.url}/invocations", json=payload, timeout=60)
                    seen.append((r.status_code, r.headers.get("X-Model-Version")))
                    if r.status_code != 200 or len(r.json()["predictions"]) != 4:
                        errors.append(f"{r.status_code}: {r.text[:300]}")
                except requests.RequestException as exc:
                    seen.append((0, None))
                    errors.append(repr(exc))

    clients = [threading.Thread(target=client) for _ in range(2)]
    for thread in clients:
        thread.start()
    try:
        _wait(lambda: len(seen) >= 20, 60, "requests to version 1")
        registry.set_alias(NAME, "champion", served_store.versions[1])  # the promotion
        _wait(lambda: any(v == "2" for _, v in seen), SWAP_S, "an answer from version 2")
        count = len(seen)
        _wait(lambda: len(seen) >= count + 20, 60, "more requests to version 2")
    finally:
        stop.set()
        for thread in clients:
            thread.join(70)
    assert errors == [], f"{len(errors)} failed requests of {len(seen)}: {errors[:3]}"
    versions = [v for _, v in seen]
    assert versions[0] == "1" and versions[-1] == "2"
    # Once version 2 answered, no request went back to version 1 (beyond the ones already
    # in flight on it at the switch: at most one per client).
    first_new = versions.index("2")
    assert versions[first_new:].count("1") <= len(clients)
    assert requests.get(f"{front.url}/version", timeout=10).json()["version"] == "2"
    assert "now serving version 2" in front.output()


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout_s} s")
        time.sleep(0.2)
