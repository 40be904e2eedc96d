"""The stack's Prefect server, MLflow server and workers: their supervisord programs (command,
environment, user), authentication, and readiness checks.

Prefect's API requires an auth string (PREFECT_SERVER_API_AUTH_STRING; clients send
PREFECT_API_AUTH_STRING) and allows CORS from the dashboard's own origin only. MLflow runs its
basic-auth app (users `admin`, `pipeline`, `viewer`; default permission READ). The servers and
workers run as an unprivileged user (FMNIST_STACK_USER, default `fmnist`, created when missing)
whenever the stack is started as root.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fmnist.stack import HOST, REPO_ROOT, StackError
from fmnist.stack.automations import HEARTBEAT_S
from fmnist.stack.postgres import Postgres
from fmnist.stack.secrets import Secrets
from fmnist.stack.supervisor import Program

SERVICE_USER = os.environ.get("FMNIST_STACK_USER", "fmnist")
MLFLOW_ADMIN = "admin"
MLFLOW_PIPELINE_USER = "pipeline"  # pipeline and workers log as this user
MLFLOW_VIEWER = "viewer"  # read-only: people who only look at the UI


def venv_bin() -> Path:
    """The virtual environment's bin folder: the running interpreter's, else the repo's .venv."""
    here = Path(sys.executable).parent  # not resolved: a venv's python is a symlink
    return here if (here / "prefect").exists() else REPO_ROOT / ".venv" / "bin"


def basic_auth(credentials: str) -> str:
    """An HTTP Authorization header value for 'user:password'."""
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def http(
    url: str,
    body: Any = None,
    *,
    auth: str | None = None,
    method: str | None = None,
    timeout: float = 10,
) -> tuple[int, Any]:
    """(status, decoded JSON or None) of a request; HTTP errors are returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = basic_auth(auth)
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def ok(url: str, **kwargs: Any) -> bool:
    """Whether url answers 200 (connection errors count as no)."""
    try:
        return http(url, **kwargs)[0] == 200
    except OSError:
        return False


# -- the unprivileged user --------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceUser:
    """The OS user servers and workers run as (only when the stack is started as root)."""

    name: str
    uid: int
    gid: int


def service_user(create: bool = True) -> ServiceUser | None:
    """FMNIST_STACK_USER (created as a system user when missing) if we are root, else None:
    without root the services simply run as the caller."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        entry = None
    if entry is None:
        if not create:
            return None
        result = subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"could not create user {SERVICE_USER!r}: {result.stderr.strip()}")
        entry = pwd.getpwnam(SERVICE_USER)
    if entry.pw_uid == 0:
        raise StackError(f"FMNIST_STACK_USER={SERVICE_USER!r} is root; name an unprivileged user")
    return ServiceUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def owned_dir(path: Path, user: ServiceUser | None, mode: int = 0o700) -> Path:
    """A folder that belongs to the service user (or to us), mode 0700 by default."""
    path.mkdir(parents=True, exist_ok=True)
    if user is not None:
        os.chown(path, user.uid, user.gid)
    os.chmod(path, mode)
    return path


def _launched(pgid_file: Path, argv: list[str]) -> list[str]:
    """argv run through stack.launch, which first ends what a killed predecessor left."""
    return [str(venv_bin() / "python"), "-m", "fmnist.stack.launch", str(pgid_file), "--", *argv]


def _base_env(home: Path) -> dict[str, str]:
    return {
        "HOME": str(home),
        "PATH": f"{venv_bin()}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",  # stdin is /dev/null: a prompt would only hang
    }


# -- Prefect ----------------------------------------------------------------------------------


class PrefectServer:
    """`prefect server start` on 127.0.0.1:port over PostgreSQL, behind an auth string."""

    name = "prefect-server"

    def __init__(self, state_dir: Path, port: int, postgres: Postgres, secrets: Secrets):
        self.state_dir = Path(state_dir).resolve()
        self.port = port
        self.postgres = postgres
        self.secrets = secrets

    @property
    def url(self) -> str:
        """The dashboard (and the only origin CORS allows)."""
        return f"http://{HOST}:{self.port}"

    @property
    def api_url(self) -> str:
        """What PREFECT_API_URL should be."""
        return f"{self.url}/api"

    address = url

    def program(self, user: ServiceUser | None) -> Program:
        """The supervisord program."""
        home = owned_dir(self.state_dir / "prefect-server", user)
        env = _base_env(home) | {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_UI_API_URL": self.api_url,
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": self.postgres.url(
                "prefect", driver="postgresql+asyncpg"
            ),
            "PREFECT_SERVER_API_AUTH_STRING": self.secrets.prefect_auth_string,
            "PREFECT_API_AUTH_STRING": self.secrets.prefect_auth_string,
            "PREFECT_SERVER_CORS_ALLOWED_ORIGINS": self.url,
            # The server writes the dashboard's files (its URLs filled in) at start; by default
            # into the venv, which the service user may not write.
            "PREFECT_UI_STATIC_DIRECTORY": str(home / "ui"),
        }
        argv = [str(venv_bin() / "prefect"), "server", "start", "--host", HOST]
        argv += ["--port", str(self.port)]
        argv = _launched(home / "server.pgid", argv)
        return Program(self.name, argv, env, user=user and user.name, directory=str(home))

    def healthy(self) -> bool:
        """Health answers, and the API lets the auth string in."""
        return ok(f"{self.api_url}/health") and ok(
            f"{self.api_url}/admin/version", auth=self.secrets.prefect_auth_string
        )

    def api(self, path: str, body: Any = None, method: str | None = None) -> tuple[int, Any]:
        """An authenticated API call."""
        return http(
            f"{self.api_url}{path}", body, auth=self.secrets.prefect_auth_string, method=method
        )


class PrefectWorker:
    """`prefect worker start --pool POOL` in the repository, as the unprivileged user."""

    def __init__(
        self,
        state_dir: Path,
        pool: str,
        prefect: PrefectServer,
        mlflow: MlflowServer,
        *,
        name: str | None = None,
        limit: int | None = None,
        extra_env: dict[str, str] | None = None,
    ):
        self.state_dir = Path(state_dir).resolve()
        self.pool = pool
        self.name = name or f"worker-{pool}"
        self.prefect = prefect
        self.mlflow = mlflow
        self.limit = limit
        self.extra_env = extra_env or {}
        self.started_at = 0.0

    @property
    def address(self) -> str:
        """For `status`."""
        return f"pool {self.pool}"

    def program(self, user: ServiceUser | None) -> Program:
        """The supervisord program. No KERAS_BACKEND: the profile or the pool decides."""
        home = owned_dir(self.state_dir / "home", user)
        secrets = self.prefect.secrets
        env = (
            _base_env(home)
            | {
                "PREFECT_HOME": str(owned_dir(home / self.name, user)),
                "PREFECT_API_URL": self.prefect.api_url,
                "PREFECT_API_AUTH_STRING": secrets.prefect_auth_string,
                "MLFLOW_TRACKING_URI": self.mlflow.url,
                "MLFLOW_TRACKING_USERNAME": MLFLOW_PIPELINE_USER,
                "MLFLOW_TRACKING_PASSWORD": secrets.mlflow_pipeline_password,
                "TF_CPP_MIN_LOG_LEVEL": "2",
                # Flow runs inherit it: their heartbeats feed the zombie automation.
                "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S),
            }
            | self.extra_env
        )
        argv = [str(venv_bin() / "prefect"), "worker", "start", "--pool", self.pool]
        argv += ["--name", self.name]
        if self.limit is not None:
            argv += ["--limit", str(self.limit)]
        return Program(self.name, argv, env, user=user and user.name, directory=str(REPO_ROOT))

    def heartbeat(self) -> datetime | None:
        """This worker's last heartbeat as the server saw it, None if it never sent one."""
        try:
            status, workers = self.prefect.api(f"/work_pools/{self.pool}/workers/filter", {})
        except OSError:
            return None
        for worker in (workers if status == 200 else None) or []:
            if worker.get("name") == self.name and worker.get("last_heartbeat_time"):
                return datetime.fromisoformat(worker["last_heartbeat_time"])
        return None

    def healthy(self) -> bool:
        """A heartbeat since this process started (the server remembers older ones)."""
        beat = self.heartbeat()
        if beat is None:
            return False
        since = self.started_at - 1 if self.started_at else time.time() - 90
        return beat.timestamp() >= since


# -- MLflow -----------------------------------------------------------------------------------


class MlflowServer:
    """`mlflow server --app-name basic-auth` on 127.0.0.1:port: PostgreSQL backend store,
    artifacts served through the server (mlflow-artifacts:/), users in its auth database."""

    name = "mlflow-server"

    def __init__(
        self, state_dir: Path, port: int, postgres: Postgres, secrets: Secrets, workers: int = 2
    ):
        self.state_dir = Path(state_dir).resolve()
        self.port = port
        self.postgres = postgres
        self.secrets = secrets
        self.workers = workers
        self.home = self.state_dir / "mlflow"
        self.artifacts_dir = self.home / "artifacts"
        self.auth_config = self.home / "basic_auth.ini"

    @property
    def url(self) -> str:
        """The tracking URI and UI."""
        return f"http://{HOST}:{self.port}"

    address = url

    def program(self, user: ServiceUser | None) -> Program:
        """The supervisord program, and its auth config file."""
        owned_dir(self.home, user)
        owned_dir(self.artifacts_dir, user)
        # No password in this file: the admin's first password comes from the environment
        # (MLFLOW_AUTH_ADMIN_PASSWORD), and it is only read when the admin does not exist yet.
        self.auth_config.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{self.home / 'basic_auth.db'}\n"
            f"admin_username = {MLFLOW_ADMIN}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        env = _base_env(self.home) | {
            "MLFLOW_BACKEND_STORE_URI": self.postgres.url("mlflow", driver="postgresql+psycopg2"),
            "MLFLOW_AUTH_CONFIG_PATH": str(self.auth_config),
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.secrets.mlflow_admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secrets.mlflow_flask_secret,
            # MLflow's job runner (GenAI evaluation, prompt optimisation) is seven more Python
            # processes and a /dev/shm folder it never removes; this pipeline uses none of it.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        # The backend store's URL (with its password) goes by environment, never on the
        # command line, where `ps` shows it to every user.
        argv = [
            str(venv_bin() / "mlflow"),
            "server",
            "--app-name",
            "basic-auth",
            "--serve-artifacts",
            "--artifacts-destination",
            str(self.artifacts_dir),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        argv = _launched(self.home / "server.pgid", argv)
        return Program(self.name, argv, env, user=user and user.name, directory=str(self.home))

    def _admin(self) -> str:
        return f"{MLFLOW_ADMIN}:{self.secrets.mlflow_admin_password}"

    def healthy(self) -> bool:
        """/health answers and the admin can log in."""
        return ok(f"{self.url}/health") and ok(
            f"{self.url}/api/2.0/mlflow/users/get?username={MLFLOW_ADMIN}", auth=self._admin()
        )

    def ensure_users(self) -> None:
        """Users `pipeline` and `viewer` with the secrets' passwords (created or updated)."""
        for user, password in (
            (MLFLOW_PIPELINE_USER, self.secrets.mlflow_pipeline_password),
            (MLFLOW_VIEWER, self.secrets.mlflow_viewer_password),
        ):
            query = urllib.parse.urlencode({"username": user})
            status, _ = http(f"{self.url}/api/2.0/mlflow/users/get?{query}", auth=self._admin())
            body = {"username": user, "password": password}
            if status == 200:
                path, method = "update-password", "PATCH"
            else:
                path, method = "create", "POST"
            status, answer = http(
                f"{self.url}/api/2.0/mlflow/users/{path}", body, auth=self._admin(), method=method
            )
            if status != 200:
                raise StackError(f"MLflow: could not {path} user {user!r} ({status}): {answer}")
