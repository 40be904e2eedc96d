"""Bounded waits: a trickling mirror, Ctrl-C mid-download, an unreachable tracking server."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import closed_port, partials, signal_group, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.http]


@pytest.fixture
def slow_mirror(trickle_server, debian_dir):
    """The four real .gz files served at about 20 kB/s (1 kB every 50 ms)."""
    trickle_server.chunk = 1024
    for f in debian_dir.glob("*.gz"):
        shutil.copyfile(f, trickle_server.root / f.name)
    return trickle_server


def test_a_trickling_mirror_fails_at_the_deadline_with_a_clear_message(workspace, slow_mirror):
    """Every read returns within http_timeout_s, so only the total deadline can stop it:
    before, the 26 MB training images took about 20 minutes at this rate."""
    done = workspace.run(
        "data.http_deadline_s=1", "data.http_timeout_s=5", source=slow_mirror.url, timeout=600
    )
    assert done.returncode == 1, done.output[-3000:]
    assert "train-images-idx3-ubyte" in done.output
    assert "not complete within the 1 s deadline (data.http_deadline_s)" in done.output
    # Three tries of the download task (Prefect retries it after 5 and 30 s), 4 files each,
    # 1 s per file, plus start-up: 78 s in all in CI, 191 s here at a load average of 18;
    # far from the 20 minutes an unbounded read would take.
    assert done.seconds < 400, done.seconds
    assert partials(workspace.cache_dir) == []
    assert not (workspace.cache_dir / "train-images-idx3-ubyte").exists()


def test_ctrl_c_mid_download_leaves_no_partial_files(workspace, slow_mirror):
    proc = workspace.start("data.http_deadline_s=120", source=slow_mirror.url)
    try:
        wait_for(lambda: partials(workspace.cache_dir), 180, "download in progress", proc)
        time.sleep(0.5)
        signal_group(proc, signal.SIGINT)
        # Ctrl-C stops the download at once, but it also stops Prefect's ephemeral API server
        # (same process group), and Prefect's client retries the dead server before it gives
        # up: about a minute idle (5 retries, 2 to 32 s apart), twice that on a busy machine.
        proc.communicate(timeout=300)
    finally:
        signal_group(proc, signal.SIGKILL)
    assert proc.returncode != 0
    assert partials(workspace.cache_dir) == []


def test_predict_against_a_dead_tracking_server_fails_within_the_bound(tmp_path):
    from PIL import Image

    from fmnist.tracking.limits import RequestLimits

    image = tmp_path / "blank.png"
    Image.new("L", (28, 28)).save(image)
    uri = f"http://127.0.0.1:{closed_port()}"
    # Environment values win over the profile's (as MLFLOW_TRACKING_URI does): a small
    # bound keeps the test short; tests/unit/test_limits.py checks the profile's defaults.
    limits = RequestLimits(timeout_s=5, max_retries=2, backoff_factor=1)
    env = {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }
    import os

    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "fmnist.flows.cli", "predict", "--tracking-uri", uri, str(image)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"tracking server {uri} unreachable" in proc.stderr
    assert "Connection refused" in proc.stderr and "gave up after 2 retries" in proc.stderr
    # The bound for a refused connection, plus the command's start-up (TensorFlow import).
    assert elapsed < limits.refused_bound_s() + 60, elapsed
