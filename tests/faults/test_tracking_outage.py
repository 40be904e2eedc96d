"""The MLflow server goes away mid-training for longer than the client's retries: training
goes on, every write waits in the spool, the pipeline says so and fails, and once the server
is back `fmnist spool upload` delivers all of it: nothing lost, nothing twice."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fmnist.flows.children import free_port
from fmnist.tracking.registry import Registry

pytestmark = pytest.mark.faults

EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds")


class MlflowServer:
    """`mlflow server` on 127.0.0.1 over a SQLite store and an artifact folder of its own."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 240) -> None:
        """Start it (again, on the same port and store) and wait until it answers."""
        log = (self.root / "server.log").open("a")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "mlflow", "server",
                "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db",
                "--artifacts-destination", str(self.root / "artifacts"),
                "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            ],
            stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.root / "server.log").read_text()[-2000:]
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/health", timeout=2) as r,
            ):
                if r.status == 200:
                    return
            time.sleep(0.5)
        raise TimeoutError(f"mlflow server on {self.url} did not start")

    def stop(self) -> None:
        """Kill it and everything it started (gunicorn or uvicorn workers)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None


def test_server_away_longer_than_the_retries_then_back(workspace):
    tmp_path = workspace.root
    server = MlflowServer(tmp_path, free_port())
    server.start()
    env = workspace.env(
        MLFLOW_TRACKING_URI=server.url,
        # The client's own bound: a request to a server that is away gives up in seconds.
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="5",
    )
    spool = tmp_path / "spool"
    command = workspace.run_args(
        "train.epochs=4",
        "data.train_subset=3000",
        f"tracking.spool_dir={spool}",
        "tracking.registered_model=null",
    )
    client = MlflowClient(tracking_uri=server.url)
    try:
        with (tmp_path / "run.log").open("w") as log:
            run = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=log)
            # The server goes away once the first epoch is in.
            deadline = time.monotonic() + 600
            child = None
            while time.monotonic() < deadline and run.poll() is None:
                exp = client.get_experiment_by_name("fashion-mnist-cnn")
                runs = client.search_runs([exp.experiment_id]) if exp else []
                child = next((r for r in runs if r.info.run_name == "pool_dropout"), None)
                if child and client.get_metric_history(child.info.run_id, "epoch_seconds"):
                    break
                time.sleep(0.3)
            assert run.poll() is None and child is not None, (tmp_path / "run.log").read_text()
            server.stop()
            code = run.wait(timeout=900)  # training goes on without the server
        output = (tmp_path / "run.log").read_text()
        assert code == 1, output[-3000:]
        assert "unreachable" in output and "fmnist spool upload" in output
        child_id = child.info.run_id
        assert (spool / child_id / "ops.jsonl").is_file()

        server.start()  # back, same port, same store
        upload = subprocess.run(
            [sys.executable, "-m", "fmnist.flows.cli", "spool", "upload", "--spool", str(spool)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert upload.returncode == 0, upload.stdout + upload.stderr
        assert not any(spool.glob("*/ops.jsonl"))  # nothing left waiting

        done = client.get_run(child_id)
        assert done.info.status == "FINISHED"
        for key in EPOCH_METRICS:  # every epoch once: the ones before and during the outage
            steps = sorted(m.step for m in client.get_metric_history(child_id, key))
            assert steps == [1, 2, 3, 4], key
        assert "test_accuracy" in done.data.metrics
        assert done.data.tags["model_uri"].startswith("models:/")
        files = {f.path for f in client.list_artifacts(child_id)}
        assert {"learning_curves.png", "confusion_matrix.png", "classification_report.txt"} <= files
        parent = client.get_run(done.data.tags["mlflow.parentRunId"])
        assert parent.info.status == "FAILED"  # the pipeline failed, and says why
        assert "unreachable" in parent.data.tags["failure_reason"]
    finally:
        server.stop()


def _finished(client: MlflowClient, name: str) -> object | None:
    exp = client.get_experiment_by_name("fashion-mnist-cnn")
    runs = client.search_runs([exp.experiment_id]) if exp else []
    run = next((r for r in runs if r.info.run_name == name), None)
    return run if run is not None and run.info.status == "FINISHED" else None


def test_a_model_that_starts_while_the_server_is_away_trains_unstalled_and_its_champion_serves(
    workspace,
):
    """Two models; the server goes away once the first has finished, so the second starts
    during the outage (its run cannot even be created). MLflow's own retries stay at their
    defaults (about a minute per refused request). The second trains anyway, without
    waiting on the server; once it is back, both runs are there. Then the model uploaded
    from the spool is made champion, and a fresh run scores that champion again."""
    tmp_path = workspace.root
    server = MlflowServer(tmp_path, free_port())
    server.start()
    env = workspace.env(MLFLOW_TRACKING_URI=server.url)
    spool = tmp_path / "spool"
    command = workspace.run_args(
        "train.models=[pool_dropout, conv_only]",
        "train.epochs=2",
        f"tracking.spool_dir={spool}",
        "tracking.promotion_floor=0.0",
    )
    client = MlflowClient(tracking_uri=server.url)
    try:
        with (tmp_path / "run.log").open("w") as log:
            run = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=log)
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and run.poll() is None:
                if _finished(client, "pool_dropout") is not None:
                    break
                time.sleep(0.3)
            assert run.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            server.stop()  # before conv_only starts (it is the next thing the run does)
            code = run.wait(timeout=900)
        output = (tmp_path / "run.log").read_text()
        assert code == 1, output[-3000:]
        assert "fmnist spool upload" in output

        server.start()  # back, same port, same store
        upload = subprocess.run(
            [sys.executable, "-m", "fmnist.flows.cli", "spool", "upload", "--spool", str(spool)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert upload.returncode == 0, upload.stdout + upload.stderr
        second = _finished(client, "conv_only")
        assert second is not None, "the model that started during the outage is lost"
        run_id = second.info.run_id
        for key in EPOCH_METRICS:
            assert sorted(m.step for m in client.get_metric_history(run_id, key)) == [1, 2]
        # Not stalled: the writes inside fit (each epoch's metrics) cost at most a health
        # check each, where MLflow's retries would have cost about a minute per epoch.
        epochs = sum(m.value for m in client.get_metric_history(run_id, "epoch_seconds"))
        lost = second.data.metrics["training_seconds"] - epochs
        print(f"conv_only during the outage: {lost:.1f} s of training lost to writes")
        assert lost < 15, lost
        assert (
            second.data.tags["mlflow.parentRunId"]
            == (_finished(client, "pool_dropout").data.tags["mlflow.parentRunId"])
        )

        # The model uploaded from the spool becomes champion; a fresh run re-scores it.
        registry = Registry(server.url)
        version = registry.register(second.data.tags["model_uri"], "fashion-mnist-cnn")
        registry.set_alias("fashion-mnist-cnn", "champion", version)
        again = subprocess.run(
            [*command, "--fresh"], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=900,
        )  # fmt: skip
        assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
        assert "compile()" not in again.stdout + again.stderr
    finally:
        server.stop()
