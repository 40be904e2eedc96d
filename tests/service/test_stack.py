"""The native service stack for real: PostgreSQL, the Prefect server, the MLflow server (with
artifacts served through it), the workers under supervisord, and `up`/`down`/`status` of
stack/ (python -m fmnist.stack)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from fmnist.stack import POOLS
from fmnist.stack.core import EXIT_NOT_RUNNING, Ports, Stack, temp_state_dir
from fmnist.stack.postgres import Postgres, postgres_missing
from tests.service_fixtures import (
    TEST_GPU_CONCURRENCY,
    ServiceStack,
    alive,
    process_tree,
    start_stack,
)
from tests.skips import missing

pytestmark = pytest.mark.service


def _query(pg: Postgres, database: str, sql: str, *args: object, role: str = "postgres"):
    with contextlib.closing(pg.connect(database, role)) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def test_postgres_local_only_with_a_role_per_database(service_stack: ServiceStack) -> None:
    pg = service_stack.postgres
    names = {row[0] for row in _query(pg, "postgres", "SELECT datname FROM pg_database")}
    assert {"prefect", "mlflow"} <= names
    assert _query(pg, "postgres", "SHOW listen_addresses") == [("127.0.0.1",)]
    # The socket lives in the data folder (0700), never /var/run/postgresql.
    assert _query(pg, "postgres", "SHOW unix_socket_directories") == [(str(pg.data_dir),)]
    # Every rule of pg_hba.conf asks for a scram-sha-256 password: no trust, no peer.
    methods = {
        row[0] for row in _query(pg, "postgres", "SELECT auth_method FROM pg_hba_file_rules")
    }
    assert methods == {"scram-sha-256"}
    roles = dict(
        _query(
            pg,
            "postgres",
            "SELECT rolname, rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles "
            "WHERE rolname IN ('prefect', 'mlflow')",
        )
    )
    assert roles == {"prefect": False, "mlflow": False}
    owners = dict(
        _query(
            pg,
            "postgres",
            "SELECT datname, pg_get_userbyid(datdba) FROM pg_database "
            "WHERE datname IN ('prefect', 'mlflow')",
        )
    )
    assert owners == {"prefect": "prefect", "mlflow": "mlflow"}
    # Each role reaches its own database and no other.
    assert _query(pg, "mlflow", "SELECT current_user", role="mlflow") == [("mlflow",)]
    import psycopg2

    with pytest.raises(psycopg2.OperationalError, match="permission denied"):
        _query(pg, "prefect", "SELECT 1", role="mlflow")


def test_prefect_server_work_pool_roundtrip(service_stack: ServiceStack) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with urllib.request.urlopen(f"{service_stack.prefect_api_url}/health", timeout=10) as r:
        assert r.status == 200
    name = f"test-{uuid.uuid4().hex[:8]}"
    with service_stack.prefect_settings(), get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        pool = client.read_work_pool(name)
        client.delete_work_pool(name)
    assert (pool.name, pool.type) == (name, "process")


def test_mlflow_artifacts_go_through_the_server(
    service_stack: ServiceStack, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    # The session logs in as `pipeline` (MLFLOW_TRACKING_USERNAME/PASSWORD).
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
    stored = list(service_stack.stack.mlflow.artifacts_dir.rglob("note.txt"))
    assert len(stored) == 1 and run.info.run_id in str(stored[0])
    rows = _query(
        service_stack.postgres,
        "mlflow",
        "SELECT status FROM runs WHERE run_uuid = %s",
        run.info.run_id,
        role="mlflow",
    )
    assert rows == [("FINISHED",)]


def test_workers_poll_cpu_and_gpu_pools_locked_down(service_stack: ServiceStack) -> None:
    from prefect.client.orchestration import get_client

    with service_stack.prefect_settings(), get_client(sync_client=True) as client:
        for pool in POOLS:
            work_pool = client.read_work_pool(pool)
            assert work_pool.type == "process"
            names = {w.name for w in client.read_workers_for_work_pool(pool)}
            assert f"worker-{pool}" in names
            template = work_pool.base_job_template
            assert {"command", "working_dir"}.isdisjoint(template["job_configuration"])
            assert template["variables"]["additionalProperties"] is False
            assert service_stack.pid(f"worker-{pool}") is not None
        # Training runs queue on the gpu pool's limit: FMNIST_GPU_CONCURRENCY at stack-up (the
        # session's stack sets it; by default one per GPU, 1 without one).
        assert client.read_work_pool("gpu").concurrency_limit == int(TEST_GPU_CONCURRENCY)
        assert client.read_work_pool("cpu").concurrency_limit is None


def test_up_twice_then_down_leaves_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    if (why := postgres_missing()) is not None:
        pytest.skip(missing(why))
    state = temp_state_dir("fmnist-up-")
    try:
        _up_twice_then_down(state, capsys)
    finally:
        with contextlib.suppress(Exception):
            Stack(state).down()
        shutil.rmtree(state, ignore_errors=True)


def _up_twice_then_down(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    first = start_stack(state, deployments=False)
    print(f"stack up (no deployments) in {time.monotonic() - started:.0f} s")
    ports: Ports = first.ports
    pids = first.pids()
    assert all(pids.values()), pids
    out = capsys.readouterr().out
    assert f"Prefect dashboard  http://127.0.0.1:{ports.prefect}" in out
    assert f"MLflow UI          http://127.0.0.1:{ports.mlflow}" in out
    secrets_file = state / "secrets.env"
    assert secrets_file.stat().st_mode & 0o777 == 0o600
    assert all(value not in out for value in first.secrets.values())  # nothing printed

    again = Stack(state, ports, durable=False, mlflow_workers=1)
    again.up(deployments=False)
    assert again.pids() == pids
    assert capsys.readouterr().out.count("already running") == len(pids)
    status = subprocess.run(
        [sys.executable, "-m", "fmnist.stack", "status", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    # Every process of the stack, children included (uvicorn, postgres backends).
    supervisord = again.supervisor.pid()
    assert supervisord is not None
    tree = process_tree(supervisord)
    assert set(pids.values()) <= tree

    down = subprocess.run(
        [sys.executable, "-m", "fmnist.stack", "down", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [pid for pid in tree if alive(pid)]
    status = subprocess.run(
        [sys.executable, "-m", "fmnist.stack", "status", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == EXIT_NOT_RUNNING, status.stdout + status.stderr
    assert status.stdout.count("stopped") == len(pids)
    assert os.listdir(state / "supervisor") == ["supervisord.conf"]  # no socket, no pid file


def test_gpu_concurrency_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from fmnist.stack import pools

    monkeypatch.setenv("FMNIST_GPU_CONCURRENCY", "3")
    assert pools.gpu_concurrency() == 3
    monkeypatch.setenv("FMNIST_GPU_CONCURRENCY", "0")  # a limit of 0 would run nothing
    assert pools.gpu_concurrency() == 1
    monkeypatch.delenv("FMNIST_GPU_CONCURRENCY")
    assert pools.gpu_concurrency() == max(1, pools.gpu_count())
