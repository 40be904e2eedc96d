"""A pipeline killed mid-epoch (SIGKILL of the whole process group, as a power loss or an
OOM kill would), then run again with the same command: it resumes, nothing twice, nothing
lost, nothing left RUNNING."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.faults

EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds")


# Two models, vgg with epochs of a few seconds: time to kill it in the middle of one.
RESUMABLE = ("train.models=[pool_dropout, vgg]", "train.epochs=3", "data.train_subset=3000")


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process and everything it started (the CLI, its Prefect server)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _runs(client: MlflowClient) -> dict[str, object]:
    exp = client.get_experiment_by_name("fashion-mnist-cnn")
    if exp is None:
        return {}
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_sigkill_mid_epoch_then_the_same_command_resumes(workspace):
    tmp_path = workspace.root
    env, command = workspace.env(), workspace.run_args(*RESUMABLE)
    client = MlflowClient(tracking_uri=workspace.tracking_uri)

    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=log, stderr=log, start_new_session=True
        )
        deadline = time.monotonic() + 900
        try:
            # Kill once vgg has finished its first epoch (and so is inside its second).
            while time.monotonic() < deadline and first.poll() is None:
                vgg = _runs(client).get("vgg")
                if vgg is not None and 1 in _steps(client, vgg.info.run_id, "epoch_seconds"):
                    break
                time.sleep(0.5)
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        finally:
            _kill_group(first)

    killed = _runs(client)
    parent_id = killed["pipeline-smoke"].info.run_id
    assert killed["pipeline-smoke"].info.status == "RUNNING"  # nobody could end it
    assert killed["pool_dropout"].info.status == "FINISHED"
    pool_end = killed["pool_dropout"].info.end_time
    assert killed["vgg"].info.status == "RUNNING"
    assert _steps(client, killed["vgg"].info.run_id, "epoch_seconds")[0] == 1

    again = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming run" in again.stderr + again.stdout
    assert "pool_dropout: trained already" in again.stderr + again.stdout

    runs = _runs(client)
    assert set(runs) == {"pipeline-smoke", "pool_dropout", "vgg"}  # no second parent or child
    parent = runs["pipeline-smoke"]
    assert parent.info.run_id == parent_id and parent.info.status == "FINISHED"
    assert runs["pool_dropout"].info.end_time == pool_end  # not trained again
    vgg = runs["vgg"]
    assert vgg.info.run_id == killed["vgg"].info.run_id and vgg.info.status == "FINISHED"
    assert vgg.data.tags["mlflow.parentRunId"] == parent_id
    for key in EPOCH_METRICS:  # one value per epoch: none missing, none twice
        assert _steps(client, vgg.info.run_id, key) == [1, 2, 3], key
        assert _steps(client, runs["pool_dropout"].info.run_id, key) == [1, 2, 3], key
    assert "test_accuracy" in vgg.data.metrics
    assert not any((tmp_path / "data" / "checkpoints").iterdir())  # finished: nothing kept

    # The killed process's Prefect flow run was marked Crashed by the second run.
    earlier = parent.data.tags["prefect.earlier_flow_run_ids"].split(",")
    assert len(earlier) == 1 and earlier[0] != parent.data.tags["prefect.flow_run_id"]
    with sqlite3.connect(workspace.root / "prefect" / "prefect.db") as db:
        (state,) = db.execute(
            "select state_type from flow_run where id = ?", (earlier[0],)
        ).fetchone()
    assert state == "CRASHED"


def test_fresh_starts_over_and_ends_the_orphan(workspace):
    """--fresh: the killed run is not resumed; it is ended KILLED with the reason instead."""
    tmp_path = workspace.root
    env, command = workspace.env(), workspace.run_args(*RESUMABLE, "train.models=[pool_dropout]")
    client = MlflowClient(tracking_uri=workspace.tracking_uri)
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=log, stderr=log, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and first.poll() is None:
                if "pool_dropout" in _runs(client):
                    break
                time.sleep(0.5)
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        finally:
            _kill_group(first)
    orphan = _runs(client)["pipeline-smoke"].info.run_id

    again = subprocess.run(
        [*command[:4], "--fresh", *command[4:]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    exp = client.get_experiment_by_name("fashion-mnist-cnn")
    runs = client.search_runs([exp.experiment_id])
    parents = {r.info.run_id: r for r in runs if r.info.run_name == "pipeline-smoke"}
    assert len(parents) == 2
    assert parents[orphan].info.status == "KILLED"
    assert "process died" in parents[orphan].data.tags["failure_reason"]
    children_of_orphan = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == orphan]
    assert all(r.info.status == "KILLED" for r in children_of_orphan)
    (new,) = [r for i, r in parents.items() if i != orphan]
    assert new.info.status == "FINISHED"
    assert parents[orphan].data.tags["resume.abandoned"]  # for good, not just this once

    # The next plain run does not go back to what --fresh abandoned.
    plain = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr[-3000:]
    runs = client.search_runs([exp.experiment_id])
    parents = {r.info.run_id: r for r in runs if r.info.run_name == "pipeline-smoke"}
    assert len(parents) == 3 and parents[orphan].info.status == "KILLED"
    assert not (tmp_path / "data" / "checkpoints" / orphan).exists()  # its folder removed
