"""A stopped `fmnist run` leaves nothing running: its local Prefect API server dies with it
(SIGTERM or SIGKILL of the main process alone, as an operator or the OOM killer sends), and
a SIGTERM to the whole process group ends the run within a bound, its MLflow runs KILLED and
its Prefect flow run no longer Running."""

from __future__ import annotations

import signal
import sqlite3
import time

import psutil
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import signal_group, wait_for

pytestmark = pytest.mark.faults

LONG = ("train.epochs=3", "data.train_subset=3000")  # long enough to be stopped mid-training


def _training(client: MlflowClient) -> bool:
    exp = client.get_experiment_by_name("fashion-mnist-cnn")
    runs = client.search_runs([exp.experiment_id]) if exp else []
    return any(r.info.run_name == "pool_dropout" for r in runs)


def _started(workspace, *overrides: str):
    proc = workspace.start(*LONG, *overrides)
    client = MlflowClient(tracking_uri=workspace.tracking_uri)
    wait_for(lambda: _training(client), 600, "a model in training", proc)
    family = psutil.Process(proc.pid).children(recursive=True)
    assert any("uvicorn" in " ".join(p.cmdline()) for p in family), "no local API server"
    return proc, family, client


def _gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return alive


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_the_main_process_stopped_alone_leaves_nothing_running(workspace, sig):
    proc, family, client = _started(workspace)
    proc.send_signal(sig)  # the main process only: its children get no signal from us
    proc.wait(timeout=120)
    alive = _gone(family, timeout=20)
    assert not alive, [" ".join(p.cmdline())[:120] for p in alive]
    if sig == signal.SIGTERM:  # it had the time to say so
        exp = client.get_experiment_by_name("fashion-mnist-cnn")
        runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
        why = {name: r.data.tags.get("failure_reason") for name, r in runs.items()}
        assert runs["pool_dropout"].info.status == "KILLED", why
        assert runs["pipeline-smoke"].info.status == "KILLED", why


def test_sigterm_to_the_whole_group_ends_the_run_promptly_and_says_so(workspace):
    proc, family, client = _started(workspace)
    t0 = time.monotonic()
    signal_group(proc, signal.SIGTERM)
    proc.wait(timeout=120)
    took = time.monotonic() - t0
    assert not _gone(family, timeout=20)
    assert took < 60, f"{took:.0f} s from SIGTERM to exit"
    exp = client.get_experiment_by_name("fashion-mnist-cnn")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    why = {name: r.data.tags.get("failure_reason") for name, r in runs.items()}
    assert runs["pipeline-smoke"].info.status == "KILLED", why
    assert runs["pipeline-smoke"].data.tags["failure_reason"].endswith("SIGTERM")
    with sqlite3.connect(workspace.root / "prefect" / "prefect.db") as db:
        states = [s for (s,) in db.execute("select state_type from flow_run")]
    assert states and "RUNNING" not in states, states
