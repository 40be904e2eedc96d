"""The native service stack for real: PostgreSQL, the Prefect server, the MLflow server (with
artifacts served through it), the workers, and `up`/`down`/`status` of flows/stack.py."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

from flows import stack
from tests.skips import missing

from .conftest import ServiceStack, Workers

pytestmark = pytest.mark.service


def _query(pg: stack.Postgres, database: str, sql: str, *args: object) -> list[tuple]:
    with contextlib.closing(pg.connect(database)) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def test_postgres_local_only_with_both_databases(service_stack: ServiceStack) -> None:
    pg = service_stack.postgres
    names = {row[0] for row in _query(pg, "postgres", "SELECT datname FROM pg_database")}
    assert {"prefect", "mlflow"} <= names
    assert _query(pg, "postgres", "SHOW listen_addresses") == [("127.0.0.1",)]
    # The socket lives in the data folder, never /var/run/postgresql.
    assert _query(pg, "postgres", "SHOW unix_socket_directories") == [(str(pg.data_dir),)]


def test_prefect_server_work_pool_roundtrip(service_stack: ServiceStack) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with urllib.request.urlopen(f"{service_stack.prefect_api_url}/health", timeout=10) as r:
        assert r.status == 200
    name = f"test-{uuid.uuid4().hex[:8]}"
    with (
        temporary_settings({PREFECT_API_URL: service_stack.prefect_api_url}),
        get_client(sync_client=True) as client,
    ):
        client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        pool = client.read_work_pool(name)
    assert (pool.name, pool.type) == (name, "process")
    # Stored in PostgreSQL, not in a SQLite file of the server's.
    rows = _query(
        service_stack.postgres, "prefect", "SELECT type FROM work_pool WHERE name = %s", name
    )
    assert rows == [("process",)]


def test_mlflow_artifacts_go_through_the_server(
    service_stack: ServiceStack, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=service_stack.mlflow_url)
    experiment_id = client.create_experiment(f"service-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "accuracy", 0.875, step=3)
    note = tmp_path / "note.txt"
    note.write_text("served by the tracking server\n")
    client.log_artifact(run.info.run_id, str(note), artifact_path="notes")
    client.set_terminated(run.info.run_id)

    # The run's artifacts live behind the server (mlflow-artifacts:/), so this client needs
    # no access to the storage folder: upload and download both go over HTTP.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    [metric] = client.get_metric_history(run.info.run_id, "accuracy")
    assert (metric.value, metric.step) == (0.875, 3)
    got = client.download_artifacts(run.info.run_id, "notes/note.txt", str(tmp_path / "dl"))
    assert Path(got).read_text() == "served by the tracking server\n"
    stored = list(service_stack.mlflow.artifacts_dir.rglob("note.txt"))
    assert len(stored) == 1 and run.info.run_id in str(stored[0])
    rows = _query(
        service_stack.postgres,
        "mlflow",
        "SELECT status FROM runs WHERE run_uuid = %s",
        run.info.run_id,
    )
    assert rows == [("FINISHED",)]


def test_workers_poll_cpu_and_gpu_pools(
    service_workers: Workers, service_stack: ServiceStack
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings({PREFECT_API_URL: service_stack.prefect_api_url}),
        get_client(sync_client=True) as client,
    ):
        for pool in stack.POOLS:
            assert client.read_work_pool(pool).type == "process"
            names = {w.name for w in client.read_workers_for_work_pool(pool)}
            assert service_workers[pool].name in names
            assert service_workers[pool].running()


def test_up_twice_then_down_leaves_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    if (why := stack.postgres_missing()) is not None:
        pytest.skip(missing(why))
    state = stack.temp_state_dir("fmnist-up-")
    try:
        _up_twice_then_down(state, capsys)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def _up_twice_then_down(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ports = stack.Ports(stack.free_port(), stack.free_port(), stack.free_port())
    try:
        first = stack.up(state, ports, deployments=False, durable=False)
        pids = first.pids()
        assert all(pids.values()), pids
        out = capsys.readouterr().out
        assert f"Prefect dashboard  http://127.0.0.1:{ports.prefect}" in out
        assert f"MLflow UI          http://127.0.0.1:{ports.mlflow}" in out

        again = stack.up(state, ports, deployments=False, durable=False)
        assert again.pids() == pids
        assert capsys.readouterr().out.count("already running") == len(pids)
        assert stack.main(["status", "--state-dir", str(state)]) == 0
        # Every process of the stack, children included (uvicorn, postgres backends).
        trees = set().union(*(stack.process_tree(pid) for pid in pids.values()))
    finally:
        stack.down(state)
    assert not any(stack.pid_alive(pid) for pid in trees)
    assert not list((state / "pids").glob("*.pid"))
    status = subprocess.run(
        [sys.executable, "-m", "flows.stack", "status", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == stack.EXIT_NOT_RUNNING, status.stdout + status.stderr
    assert status.stdout.count("stopped") == len(pids)
