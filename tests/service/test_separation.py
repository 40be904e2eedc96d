"""Flow code cannot reach the servers (issue 18, items 1 and 2): flow runs run as the worker
user, the servers as the server user, and each program's secrets sit in a file of its own
user's, so a flow run reads no secret but its own.

Both tests go through the real cpu worker: one deploys a flow that tries, as any flow's code
could, to read the servers' secrets, files and process environments and to write MLflow's
auth database and artifact store; the other uses what the Prefect credential allows anyone
who holds it, a deployment whose pull step runs a shell command, and shows what that gains.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from fmnist.stack import REPO_ROOT
from fmnist.stack.users import server_user, worker_user
from tests.service_fixtures import ServiceStack, process_tree, process_uid

pytestmark = pytest.mark.service

PROBE_ENTRYPOINT = "tests/service/flow_probe.py:probe"
FINAL_S = 300.0


@pytest.fixture(scope="module")
def users(service_stack: ServiceStack) -> tuple[Any, Any]:
    """(server user, worker user); separation needs root to start the stack."""
    if os.geteuid() != 0:
        pytest.skip("started without root, every program runs as the caller: nothing to separate")
    server, worker = server_user(create=False), worker_user(create=False)
    assert server is not None and worker is not None
    return server, worker


def _server_pids(service_stack: ServiceStack) -> list[int]:
    """The Prefect and MLflow servers, their children (uvicorn), and PostgreSQL."""
    pids: set[int] = set()
    for name in ("prefect-server", "mlflow-server", "postgres"):
        pid = service_stack.pid(name)
        assert pid is not None, f"{name} does not run"
        pids |= process_tree(pid)
    return sorted(pids)


def _wait_final(client: Any, flow_run_id: Any) -> Any:
    deadline = time.monotonic() + FINAL_S
    while time.monotonic() < deadline:
        run = client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} not final after {FINAL_S:.0f} s")


def test_a_flow_run_reads_no_secret_but_its_own(service_stack: ServiceStack, users) -> None:
    from prefect import Flow
    from prefect.client.orchestration import get_client

    server, worker = users
    state = service_stack.state_dir
    mlflow_home, prefect_home = state / "mlflow", state / "prefect-server"
    secret_files = [
        state / "secrets.env",  # every secret (root's)
        mlflow_home / "secrets.env",  # MLflow's admin password, Flask key, database URL
        prefect_home / "secrets.env",  # Prefect's database URL
        mlflow_home / "basic_auth.db",  # MLflow's users and password hashes
        state / "supervisor" / "supervisord.conf",
        state / "logs" / "mlflow-server.log",
        state / "postgres" / "PG_VERSION",
    ]
    writable_by_server_only = [
        mlflow_home / "basic_auth.db",
        mlflow_home / "artifacts",
        mlflow_home,
        prefect_home,
    ]
    # (A missing file would come back ENOENT, not EACCES: the probe proves nothing vacuous.)
    servers = _server_pids(service_stack)
    assert server.uid in {process_uid(pid) for pid in servers}
    report = service_stack.data_dir("separation") / "report.json"

    with service_stack.prefect_settings():
        deployment_id = Flow.from_source(source=str(REPO_ROOT), entrypoint=PROBE_ENTRYPOINT).deploy(
            name="separation-probe",
            work_pool_name="cpu",
            build=False,
            push=False,
            print_next_steps=False,
        )
        with get_client(sync_client=True) as client:
            parameters = {
                "report": str(report),
                "read": [str(p) for p in secret_files],
                "write": [str(p) for p in writable_by_server_only],
                "environ_of": servers,
            }
            flow_run = client.create_flow_run_from_deployment(deployment_id, parameters=parameters)
            done = _wait_final(client, flow_run.id)
    assert done.state.is_completed(), done.state.message
    found = json.loads(report.read_text())

    assert found["environ"] == dict.fromkeys(map(str, servers), "EACCES")
    assert found["read"] == dict.fromkeys(map(str, secret_files), "EACCES")
    assert found["write"] == dict.fromkeys(map(str, writable_by_server_only), "EACCES")
    assert found["uid"] == worker.uid != server.uid  # the flow run's user: the worker's
    # What it does hold: its worker's two credentials, the Prefect auth string and the
    # MLflow `pipeline` password (names only in the report).
    assert found["own_credentials"] == ["MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING"]


def test_the_prefect_credential_runs_code_as_the_worker_user_only(
    service_stack: ServiceStack, users
) -> None:
    """Prefect's open-source server has one credential and no roles: whoever holds it can
    create a deployment whose pull step runs a shell command on a worker (issue 18, item 2).
    It runs; as the worker user, which gains nothing the credential did not give already."""
    from prefect.client.orchestration import get_client

    server, worker = users
    out = service_stack.data_dir("pull-step")
    mlflow_pid = service_stack.pid("mlflow-server")
    secrets_file = service_stack.state_dir / "mlflow" / "secrets.env"
    script = (
        f"id -u > {out}/uid; "
        f"cat /proc/{mlflow_pid}/environ > {out}/environ 2> {out}/environ.err; "
        f"cat {secrets_file} > {out}/secrets 2> {out}/secrets.err; "
        f"cat {service_stack.state_dir}/secrets.env > {out}/all 2> {out}/all.err"
    )
    step = {"script": script, "shell": True, "stream_output": False}
    with service_stack.prefect_settings(), get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(f"pull-step-probe-{uuid.uuid4().hex[:8]}")
        deployment_id = client.create_deployment(
            flow_id=flow_id,
            name="pull-step-probe",
            work_pool_name="cpu",
            entrypoint="tests/service/flow_probe.py:nothing",  # never reached
            pull_steps=[{"prefect.deployments.steps.run_shell_script": step}],
        )
        flow_run = client.create_flow_run_from_deployment(deployment_id)
        _wait_final(client, flow_run.id)  # it then fails: the entrypoint does not exist

    assert (out / "uid").exists(), "the pull step did not run"
    for name in ("environ", "secrets", "all"):
        assert (out / name).read_bytes() == b"", f"the pull step read {name}"
        assert "Permission denied" in (out / f"{name}.err").read_text(), name
    assert (out / "uid").read_text().strip() == str(worker.uid) != str(server.uid)


def test_server_and_worker_files_belong_to_their_users(service_stack: ServiceStack, users):
    server, worker = users
    stack = service_stack.stack
    for path in (stack.mlflow.home, stack.prefect.home):
        assert (path.stat().st_uid, path.stat().st_mode & 0o777) == (server.uid, 0o700), path
        env_file = path / "secrets.env"
        assert (env_file.stat().st_uid, env_file.stat().st_mode & 0o777) == (server.uid, 0o600)
    home = service_stack.state_dir / "home"
    assert (home.stat().st_uid, home.stat().st_mode & 0o777) == (worker.uid, 0o700)
    credentials = home / "secrets.env"
    assert (credentials.stat().st_uid, credentials.stat().st_mode & 0o777) == (worker.uid, 0o600)
    worker_env = credentials.read_text()
    secrets = service_stack.secrets
    # The worker's file holds its two credentials and no other secret.
    held = {v for v in secrets.values() if v in worker_env}
    assert held == {
        secrets.prefect_auth_string,
        secrets.prefect_auth_token,
        secrets.mlflow_pipeline_password,
    }
    for program in ("mlflow-server", "prefect-server"):
        section = stack.supervisor.config_path.read_text().split(f"[program:{program}]")[1]
        assert "secrets.env" in section.split("[program:")[0]  # handed over through its file
    assert Path(stack.supervisor.config_path).stat().st_mode & 0o777 == 0o600
