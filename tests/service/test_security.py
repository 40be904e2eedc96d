"""What the stack refuses: unauthenticated clients of each server, foreign browser origins,
flow runs that ask for another command, and root; and where its secrets are kept."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest

from fmnist.stack import REPO_ROOT, pools
from fmnist.stack.mlflow_server import MLFLOW_VIEWER
from fmnist.stack.users import server_user, worker_user
from tests.service_fixtures import ServiceStack, process_tree, process_uid, status_of

pytestmark = pytest.mark.service


def test_prefect_api_refuses_the_unauthenticated(service_stack: ServiceStack) -> None:
    api = service_stack.prefect_api_url
    assert status_of(f"{api}/health") == 200  # probes stay open, nothing else
    assert status_of(f"{api}/deployments/filter", {}) == 401
    assert status_of(f"{api}/deployments/filter", {}, auth="fmnist:wrong-password") == 401
    assert status_of(f"{api}/deployments/filter", {}, auth=service_stack.prefect_auth) == 200
    # The dashboard itself is served (its files written where the service user may), and it
    # is told to ask for the auth string.
    assert status_of(f"{service_stack.prefect_url}/deployments", Accept="text/html") == 200
    with urllib.request.urlopen(f"{service_stack.prefect_url}/ui-settings", timeout=30) as r:
        assert json.load(r)["auth"] == "BASIC"


def test_prefect_cors_allows_only_the_dashboard(service_stack: ServiceStack) -> None:
    def allowed_origin(origin: str) -> str | None:
        request = urllib.request.Request(
            f"{service_stack.prefect_api_url}/deployments/filter",
            method="OPTIONS",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.headers.get("access-control-allow-origin")
        except urllib.error.HTTPError as exc:
            return exc.headers.get("access-control-allow-origin")

    assert allowed_origin(service_stack.prefect_url) == service_stack.prefect_url
    assert allowed_origin("http://evil.example") is None


def _preflight(url: str, origin: str) -> tuple[int, str | None]:
    """(status, Access-Control-Allow-Origin) of a browser's preflight for a credentialed POST."""
    request = urllib.request.Request(
        url,
        method="OPTIONS",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers.get("access-control-allow-origin")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("access-control-allow-origin")


def test_mlflow_cors_admits_only_its_own_origins(service_stack: ServiceStack) -> None:
    """MLflow itself admits any localhost port (issue 18, item 6): a page on localhost:8888
    could write with the browser's cached credentials. Only the UI's own origin may."""
    from mlflow.tracking import MlflowClient

    url = service_stack.mlflow_url
    create = f"{url}/api/2.0/mlflow/experiments/create"
    pipeline = f"pipeline:{service_stack.secrets.mlflow_pipeline_password}"
    own = [url, url.replace("127.0.0.1", "localhost")]
    for origin in own:
        assert _preflight(create, origin) == (200, origin)
    for origin in ("http://localhost:8888", "http://127.0.0.1:8888", "http://evil.example", "null"):
        status, allowed = _preflight(create, origin)
        assert allowed is None, f"{origin} admitted ({status})"
    # What a page on localhost:8888 would send with the cached credentials: refused, and
    # nothing made; a read from there is refused as well.
    name = f"cors-check-{uuid.uuid4().hex[:8]}"
    foreign = "http://localhost:8888"
    assert status_of(create, {"name": name}, auth=pipeline, Origin=foreign) == 403
    assert MlflowClient(tracking_uri=url).get_experiment_by_name(name) is None
    search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert status_of(search, auth=pipeline, Origin=foreign) == 403
    # The UI's own calls (same origin) and API clients (no Origin at all) pass.
    assert status_of(search, auth=pipeline, Origin=own[1]) == 200
    assert status_of(create, {"name": name}, auth=pipeline, Origin=own[0]) == 200


def test_mlflow_refuses_the_unauthenticated_and_viewer_only_reads(
    service_stack: ServiceStack,
) -> None:
    api = f"{service_stack.mlflow_url}/api/2.0/mlflow"
    secrets = service_stack.secrets
    pipeline = f"pipeline:{secrets.mlflow_pipeline_password}"
    viewer = f"{MLFLOW_VIEWER}:{secrets.mlflow_viewer_password}"
    assert status_of(f"{service_stack.mlflow_url}/health") == 200  # the probe stays open
    search = f"{api}/experiments/search"
    assert status_of(search, {"max_results": 1}) == 401
    assert status_of(search, {"max_results": 1}, auth="admin:password1234") == 401
    assert (
        status_of(search, {"max_results": 1}, auth=f"admin:{secrets.mlflow_admin_password}") == 200
    )

    # What the pipeline user makes, the viewer reads and cannot change.
    name = f"viewer-check-{uuid.uuid4().hex[:8]}"
    assert status_of(f"{api}/experiments/create", {"name": name}, auth=pipeline) == 200
    request = urllib.request.Request(
        f"{api}/experiments/get-by-name?experiment_name={name}",
        headers={"Authorization": "Basic " + base64.b64encode(viewer.encode()).decode()},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        experiment_id = json.load(response)["experiment"]["experiment_id"]
    assert status_of(f"{api}/experiments/get?experiment_id={experiment_id}", auth=viewer) == 200
    for path, body in (
        ("runs/create", {"experiment_id": experiment_id}),
        ("experiments/update", {"experiment_id": experiment_id, "new_name": "renamed"}),
        ("experiments/delete", {"experiment_id": experiment_id}),
    ):
        assert status_of(f"{api}/{path}", body, auth=viewer) == 403, path
    assert status_of(f"{api}/runs/create", {"experiment_id": experiment_id}, auth=pipeline) == 200


def test_postgres_refuses_connections_without_the_password(service_stack: ServiceStack) -> None:
    import psycopg2

    port = service_stack.postgres.port
    for role in ("postgres", "prefect", "mlflow"):
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(host="127.0.0.1", port=port, user=role, dbname=role, connect_timeout=5)
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(
                host="127.0.0.1",
                port=port,
                user=role,
                password="not-the-password",
                dbname=role,
                connect_timeout=5,
            )


@pytest.fixture(scope="module")
def train_deployment(service_stack: ServiceStack):
    """The deployments applied (schedule off); the train-model deployment's id."""
    from fmnist.conf import load_config as resolve_config
    from fmnist.stack.deployments import apply

    with service_stack.prefect_settings():
        ids = apply(
            resolve_config("smoke", overrides={"deploy.schedule.active": False}),
            local=True,
            pipeline_name="pipeline-security",
        )
        yield ids["train-model/train-model"]


def test_a_flow_run_cannot_choose_its_command(
    service_stack: ServiceStack, train_deployment, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.objects import FlowRun
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.workers.process import ProcessJobConfiguration

    marker = service_stack.data_dir("injection") / "id.txt"
    attempts = [
        {"command": f"/bin/sh -c 'id > {marker}'"},
        {"env": {"PYTHONSTARTUP": str(marker)}},
        {"working_dir": str(tmp_path)},
        {"keras_backend": "/bin/sh"},
    ]
    parameters = {
        "model_name": "conv_only",
        "dataset_uri": "/nonexistent.npz",
        "dataset_sha256": "0" * 64,
        "parent_run_id": "none",
        "config": {},
    }
    with service_stack.prefect_settings(), get_client(sync_client=True) as client:
        before = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[train_deployment]))
        )
        for job_variables in attempts:
            with pytest.raises(PrefectHTTPStatusError, match="422"):
                client.create_flow_run_from_deployment(
                    train_deployment, parameters=parameters, job_variables=job_variables
                )
        after = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[train_deployment]))
        )
        template = client.read_work_pool("gpu").base_job_template
    assert len(after) == len(before)  # none of them became a flow run
    time.sleep(5)  # had a worker got one, it would have run by now
    assert not marker.exists()

    # And a worker given those values anyway (a template edited by hand, a bypass) would
    # still run the engine, in the deployment's folder: the template reads neither.
    async def render(values: dict) -> ProcessJobConfiguration:
        return await ProcessJobConfiguration.from_template_and_values(template, values)

    config = asyncio.run(render({"command": "/bin/sh -c id", "working_dir": str(tmp_path)}))
    assert config.command is None and config.working_dir is None
    config.prepare_for_flow_run(FlowRun(flow_id=uuid.uuid4(), name="injected"))
    assert config.command.endswith("-m prefect.engine")
    assert str(tmp_path) not in str(config.working_dir)
    assert asyncio.run(render({"keras_backend": "jax"})).env["KERAS_BACKEND"] == "jax"
    # The pool's default backend is stack-up's KERAS_BACKEND (tests/conftest.py sets one);
    # without one, none: the profile decides.
    default = asyncio.run(render({})).env.get("KERAS_BACKEND")
    assert default == (os.environ.get("KERAS_BACKEND") or None)
    template = pools.base_job_template(None)
    assert "KERAS_BACKEND" not in asyncio.run(render({})).env


def test_services_do_not_run_as_root(service_stack: ServiceStack) -> None:
    supervisor = service_stack.stack.supervisor
    root_pid = supervisor.pid()
    assert root_pid is not None
    if os.geteuid() != 0:
        pytest.skip("started without root, the services run as the caller")
    server, worker = server_user(create=False), worker_user(create=False)
    assert server is not None and worker is not None and server.uid != worker.uid
    expected = {"postgres": psutil.Process(service_stack.pid("postgres")).uids().real}
    # the serving service reads the registry as the viewer: no worker rights, no flow code
    expected |= {"prefect-server": server.uid, "mlflow-server": server.uid, "serving": server.uid}
    for name in service_stack.stack.program_names:
        pid = service_stack.pid(name)
        assert pid is not None, name
        want = expected.get(name, worker.uid)  # the rest are workers
        assert process_uid(pid) == want != 0, (name, process_uid(pid))
        # Their children too (uvicorn, postgres backends, flow runs): the same user.
        for child in process_tree(pid) - {pid}:
            with contextlib.suppress(psutil.NoSuchProcess):
                assert process_uid(child) == want, (name, child)
    # Nothing under supervisord but itself is root.
    for pid in process_tree(root_pid) - {root_pid}:
        with contextlib.suppress(psutil.NoSuchProcess):
            assert process_uid(pid) != 0, pid


def test_secrets_are_private_and_git_ignored(service_stack: ServiceStack) -> None:
    state = service_stack.state_dir
    assert (state / "secrets.env").stat().st_mode & 0o777 == 0o600
    assert (state / "supervisor" / "supervisord.conf").stat().st_mode & 0o777 == 0o600
    assert (state / "supervisor").stat().st_mode & 0o777 == 0o700
    for path in (".stack/secrets.env", ".env", "docker/.env"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO_ROOT, check=False)
        assert ignored.returncode == 0, f"{path} is not git-ignored"
    # No secret on any command line of the stack (`ps` shows those to every user), nor in
    # supervisord's config: each program reads its own from a file of its user's.
    values = service_stack.secrets.values()
    for pid in process_tree(service_stack.stack.supervisor.pid()):
        with contextlib.suppress(psutil.NoSuchProcess):
            cmdline = " ".join(psutil.Process(pid).cmdline())
            assert not any(v in cmdline for v in values), f"a secret in pid {pid}'s command line"
    config = (state / "supervisor" / "supervisord.conf").read_text()
    assert not any(v in config for v in values), "a secret in supervisord.conf"


def test_a_dotenv_others_can_read_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flow runs read the repository: a .env there with stack secrets must be the caller's
    alone, or stack-up stops (and says how to fix it) before using it."""
    from fmnist.stack import StackError, secrets

    repo, state = tmp_path / "repo", tmp_path / "state"
    repo.mkdir()
    monkeypatch.setattr(secrets, "REPO_ROOT", repo)
    dotenv = repo / ".env"
    dotenv.write_text("FMNIST_PG_ADMIN_PASSWORD=from-the-dotenv-file-1234\n")
    dotenv.chmod(0o644)
    with pytest.raises(StackError, match=r"others may read it: chmod 600"):
        secrets.load(state)
    dotenv.chmod(0o600)
    assert secrets.load(state).pg_admin_password == "from-the-dotenv-file-1234"
    dotenv.write_text("OTHER_TOOL=1\n")  # no stack secret in it: nothing to protect
    dotenv.chmod(0o644)
    assert secrets.load(state).pg_admin_password != "from-the-dotenv-file-1234"
